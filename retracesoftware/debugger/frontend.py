"""What pdb and the DAP agent share: bdb's stepping logic, made thread-aware
and driven by the engine instead of ``sys.settrace``."""
from __future__ import annotations

import bdb
import sys

from retracesoftware.debugger.engine import program_tb
from retracesoftware.debugger.primitives import get_ident as _get_ident


class FrontendMixin:
    """Mixed into a `bdb.Bdb` subclass. The engine calls ``trace_dispatch``
    for every program event; bdb decides where to stop as usual, except that
    a step (``step``/``next``/``return``) stops only in the thread that asked
    for it, and nothing here calls ``sys.settrace``."""

    _step_ident = None

    def _init_frontend(self, engine):
        self.engine = engine
        self._step_ident = None

    # -- bdb, thread-aware and without sys.settrace --------------------------
    def _set_stopinfo(self, stopframe, returnframe, stoplineno=0):
        self._step_ident = _get_ident()
        super()._set_stopinfo(stopframe, returnframe, stoplineno)

    def stop_here(self, frame):
        if self._step_ident is not None and _get_ident() != self._step_ident:
            return False
        return super().stop_here(frame)

    def set_continue(self):
        self._set_stopinfo(self.botframe, None, -1)

    def set_trace(self, frame=None):
        # breakpoint() while the engine runs: stop at this thread's next line.
        if self.botframe is None:
            self.botframe = _root(frame or sys._getframe(1))
        self.set_step()

    def arrived(self, frame):
        """After a silent run to a position: bdb saw none of the calls."""
        if self.botframe is None:
            self.botframe = _root(frame)

    def at_start(self):
        self.set_step()

    def would_break(self, frame) -> bool:
        filename = self.canonic(frame.f_code.co_filename)
        if filename not in self.breaks or frame.f_lineno not in self.breaks[filename]:
            return False
        bp, _ = bdb.effective(filename, frame.f_lineno, frame)
        return bp is not None

    # -- what survives a trip back ------------------------------------------
    def export_breaks(self):
        return [[bp.file, bp.line, bp.cond, bool(bp.enabled), bool(bp.temporary)]
                for bp in bdb.Breakpoint.bpbynumber if bp is not None]

    def import_breaks(self, breaks):
        for file, line, cond, enabled, temporary in breaks:
            self.set_break(file, line, temporary, cond)
            if not enabled:
                for bp in self.get_breaks(file, line):
                    bp.disable()

    def export_state(self):
        return {}

    # -- checkpoints (checkpoints.py) ----------------------------------------
    def suspend(self):
        """This replay hands over to a fork of a checkpoint: stop reading
        from the client. Returns what the fork must know in addition."""
        return {}

    def unsuspend(self):
        pass

    def stop_threads(self) -> list:
        """Before a checkpoint's fork: end the threads of the front end.
        Returns their kernel thread ids (Checkpoints._take waits until
        they are gone)."""
        return []

    def start_threads(self):
        """After a checkpoint's fork, in the replay that took it."""

    def resumed(self, state):
        """In the fork resumed from a checkpoint: the breakpoints (numbered
        as a re-execution would number them) and state of the replay that
        went back."""
        self.clear_all_breaks()
        bdb.Breakpoint.next = 1
        bdb.Breakpoint.bplist = {}
        bdb.Breakpoint.bpbynumber = [None]
        self.import_breaks(state.get("breaks") or ())

    def take_stop_checkpoint(self, frame) -> bool:
        """At a stop: keep a checkpoint of it. True in a fork resumed from
        it, which must not stop here (see Checkpoints.at_stop)."""
        engine = self.engine
        cps = engine.checkpoints
        if cps is None or frame is None or not engine._tracing:
            return False
        return cps.at_stop(frame)

    def program_traceback(self, exc):
        return program_tb(exc.__traceback__)


def _root(frame):
    while frame.f_back is not None:
        frame = frame.f_back
    return frame


def label(engine, ident=None):
    st = engine.thread_state(ident)
    return "?" if st is None else str(st.tid)


__all__ = ["FrontendMixin", "label"]
