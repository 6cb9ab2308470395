"""pdb on a replay, with time travel (docs/DEBUGGING.md).

New commands: ``goto N``, ``info events``, ``rstep``, ``rnext``,
``rcontinue``, ``rwatch EXPR``; ``restart`` replays from the beginning.
"""
from __future__ import annotations

import os
import pdb
import sys

from retracesoftware.debugger.frontend import FrontendMixin, label
from retracesoftware.debugger.primitives import get_ident as _get_ident

_exit = os._exit


class ReplayPdb(FrontendMixin, pdb.Pdb):
    def __init__(self, engine):
        pdb.Pdb.__init__(self)
        self._init_frontend(engine)
        self.prompt = "(Pdb) "

    # -- stops ----------------------------------------------------------------
    def interaction(self, frame, tb):
        engine = self.engine
        if tb is None and self.take_stop_checkpoint(frame):
            return            # a fork of this stop's checkpoint, travelling on
        lock = engine.stop_lock
        lock.acquire()
        try:
            engine.unmute()
            tid = label(engine)
            if tid not in ("0", "?"):
                self.message(f"[thread {tid}]")
            super().interaction(frame, tb)
        finally:
            lock.release()
            engine.quiet_again()

    def stop_at(self, frame, reason, message):
        if message:
            self.message(message)
        self._step_ident = _get_ident()
        self.interaction(frame, None)

    def post_mortem(self, exc, reason):
        tb = self.program_traceback(exc)
        if tb is None:
            return
        if reason == "exception":
            self.message(f"Uncaught exception {type(exc).__name__}: {exc} — post-mortem "
                         f"(the replay goes on when you continue or quit)")
        self.reset()
        self.interaction(None, tb)

    def finished(self, code):
        pass

    # -- commands ---------------------------------------------------------------
    def _go_back(self, what, **params):
        try:
            self.engine.go_back(what, **params)
        except Exception as exc:
            self.error(f"cannot go back: {exc}")
        return 0

    def do_rstep(self, arg):
        """rstep
        Step back: to the line this thread ran before this one."""
        return self._go_back("rstep")

    def do_rnext(self, arg):
        """rnext
        Step back over calls: to the previous line of this frame (or of its
        caller, at the frame's first line)."""
        return self._go_back("rnext")

    def do_rcontinue(self, arg):
        """rcontinue
        Run backwards to the previous breakpoint hit."""
        return self._go_back("rcontinue")

    def do_rwatch(self, arg):
        """rwatch EXPR
        Run backwards to the line of this frame that last changed the value
        of EXPR."""
        if not arg.strip():
            self.error("rwatch needs an expression")
            return 0
        return self._go_back("rwatch", expr=arg.strip())

    def do_goto(self, arg):
        """goto N
        Run (forward or backward) to event N of the recording."""
        try:
            index = int(arg)
        except ValueError:
            self.error("goto needs an event number (see info events)")
            return 0
        if index < 0:
            self.error("goto needs an event number >= 0")
            return 0
        try:
            direction = self.engine.goto(index)
        except Exception as exc:
            self.error(f"cannot go to event {index}: {exc}")
            return 0
        if direction == "forward":
            self.set_continue()
            return 1
        return 0

    def do_info(self, arg):
        """info events | info checkpoints
        Where the replay is: the recording's event index, this thread and its
        position (line events of this thread so far); or the live
        checkpoints going back resumes from."""
        engine = self.engine
        if arg.strip() == "checkpoints":
            cps = engine.checkpoints
            self.message(cps.describe() if cps is not None else "checkpoints: off")
            return 0
        if arg.strip() not in ("events", "event", ""):
            self.error("usage: info events | info checkpoints")
            return 0
        st = engine.thread_state()
        index = engine.event_index()
        position = f"thread {st.tid}, line event {st.lines}" if st is not None else "not a program thread"
        self.message(f"event {index} of the recording; {position}")
        threads = sorted((str(s.tid), s.lines) for s in list(engine.states.values()))
        self.message("threads: " + ", ".join(f"{t} (line event {n})" for t, n in threads))
        cps = engine.checkpoints
        if cps is not None and getattr(cps, "describe", None):
            self.message(cps.describe())
        return 0

    def do_run(self, arg):
        """restart
        Replay again from the beginning (breakpoints are kept)."""
        return self._go_back("start")

    do_restart = do_run

    def do_quit(self, arg):
        """q(uit)
        End the replay now."""
        self.message("retrace: replay ended by the debugger")
        if self.engine.checkpoints is not None:
            self.engine.checkpoints.at_exit()
        try:
            sys.stdout.flush()
        except Exception:
            pass
        _exit(0)

    do_q = do_exit = do_quit

    def do_EOF(self, arg):
        self.message("")
        return self.do_quit(arg)
