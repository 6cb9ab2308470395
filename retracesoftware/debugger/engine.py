"""Tracing, positions and time travel for the replay debugger.

Position
    ``(thread, n)``: the *n*-th line event of logical thread *thread* since
    the replay began. A replay is deterministic, so every replay of the same
    recording passes the same positions in the same order per thread; only
    the program's lines count (our runtime's, and anything run with the
    runtime DISABLED — the debugger itself, imports done for it — never
    count). The tape's event index at a position is shown next to it.

Going back
    Deterministic re-execution. The replay process re-executes itself
    (``execve``: same pid, same terminal, same pipes to a DAP client) with
    the target in ``RETRACE_DEBUG_STATE`` and runs silently forward (no
    breakpoint stops, its output muted or de-duplicated) until the target
    position, where the debugger stops again. From a forked checkpoint when
    one is earlier than the target (checkpoints.py), else from the start.
    Searches (``rnext``, ``rcontinue``, ``rwatch``) run forward to the
    current position noting candidates, then travel to the last one.

Tracing
    # PYVERSIONS: 3.11 has only sys.settrace (per thread; threading.settrace
    # for threads started later); 3.12+ uses sys.monitoring (one tool for
    # every thread, our code's locations DISABLEd after their first event).
"""
from __future__ import annotations

import json
import os
import sys

from retracesoftware.debugger import DAP_ENV, STATE_ENV
from retracesoftware.utils import DISABLED

from retracesoftware.debugger.primitives import allocate_lock as _allocate_lock
from retracesoftware.debugger.primitives import get_ident as _get_ident
from retracesoftware.debugger.primitives import skipped as _skipped

# Private references taken before the boundary is installed (prepare()).
_getframe = sys._getframe
_execve = os.execve
_dup = os.dup
_dup2 = os.dup2
_os_open = os.open
_os_close = os.close
_ftruncate = os.ftruncate
_lseek = os.lseek
_fstat = os.fstat
_isreg = __import__("stat").S_ISREG
_environ_copy = dict(os.environ)

from retracesoftware.debugger import checkpoints as _checkpoints  # noqa: E402  (its private references too)

USE_MONITORING = sys.version_info >= (3, 12)   # PYVERSIONS: sys.monitoring exists from 3.12


class ThreadState:
    __slots__ = ("tid", "lines", "calls", "stack")

    def __init__(self, tid):
        self.tid = tid
        self.lines = 0
        self.calls = 0
        self.stack = []      # call numbers of this thread's active traced frames


_CAPTURED = {}
_LOG_FD = None


def log(message: str) -> None:
    """RETRACE_DEBUGGER_LOG=path: what the engine does (for us)."""
    if _LOG_FD is not None:
        os.write(_LOG_FD, f"[{os.getpid()}] {message}\n".encode())


def capture_environment():
    """Called before install: what a re-execution needs (the environment as
    the replay started, without our state)."""
    env = dict(os.environ)
    state = env.pop(STATE_ENV, None)
    os.environ.pop(STATE_ENV, None)
    _CAPTURED["env"] = env
    _CAPTURED["state"] = json.loads(state) if state else None
    _CAPTURED["dap"] = os.environ.get(DAP_ENV)
    global _LOG_FD
    path = os.environ.get("RETRACE_DEBUGGER_LOG")
    if path and _LOG_FD is None:
        _LOG_FD = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log(f"start: state={_CAPTURED['state']}")


class Engine:
    #: the engine of this replay, when one runs (the breakpointhook uses it)
    active = None

    @classmethod
    def create(cls, session, opts):
        if "env" not in _CAPTURED:
            capture_environment()
        state = _CAPTURED.get("state") or {}
        dap = _CAPTURED.get("dap")
        engine = cls(session, state, dap)
        if dap:
            from retracesoftware.debugger.agent import DapAgent
            engine.frontend = DapAgent(engine, dap)
        else:
            from retracesoftware.debugger.replay_pdb import ReplayPdb
            engine.frontend = ReplayPdb(engine)
        engine.frontend.import_breaks(state.get("breaks") or ())
        _checkpoints.stats.update(state.get("cp_stats") or {})
        engine.checkpoints = _checkpoints.Checkpoints(engine)
        engine.checkpoints.our_threads = 1 if dap else 0
        Engine.active = engine
        return engine

    def __init__(self, session, state, dap):
        self.session = session
        self.system = session.system
        self.gate = session.system.gate
        self.reader = session.reader
        self.thread_of = session.threads.current
        self.state = state
        self.dap = dap
        self.frontend = None
        self.states: dict = {}
        self.by_tid: dict = {}       # logical thread -> its ThreadState (idents are reused)
        self._quiet = None           # pdb: output already shown up to {"event", "pos"}
        self.travel = state.get("travel")
        self.goto_event = None
        self.pause_requested = False
        self.stop_lock = _allocate_lock()
        self._candidate = None
        self._watch_last = None
        self._muted = None
        self._tracing = False
        self._local_fn = self._local
        self.checkpoints = None
        seed = (session.preamble or {}).get("hash_seed") if isinstance(session.preamble, dict) else None
        env = dict(_CAPTURED.get("env") or os.environ)
        if seed is not None:
            env["PYTHONHASHSEED"] = str(seed)
            env["RETRACE_PINNED_HASHSEED"] = str(seed)
        self.env = env

    # ------------------------------------------------------------ positions
    def event_index(self):
        from retracesoftware.proxy.protocol import event_index
        try:
            return event_index(self.reader)
        except Exception:
            return None

    def thread_state(self, ident=None):
        return self.states.get(_get_ident() if ident is None else ident)

    def position(self, ident=None):
        st = self.thread_state(ident)
        return None if st is None else [st.tid, st.lines]

    def ident_of(self, tid):
        for ident, st in list(self.states.items()):
            if st.tid == tid:
                return ident
        return None

    # -------------------------------------------------------------- running
    def run(self, code, globals_):
        """Run the program (``runner.execute`` calls this) under the debugger."""
        frontend = self.frontend
        frontend.reset()
        if self.travel is not None:
            self._start_travel()
        else:
            frontend.at_start()
        self._trace_on()
        try:
            exec(code, globals_)
        finally:
            self._trace_off()

    def _start_travel(self):
        if self.dap:
            self._restart_output_files()
        else:
            self._quiet = self.state.get("shown")
            self._mute()

    def resume_with(self, state):
        """In a fork resumed from a checkpoint (checkpoints.py): take over
        the debugger state of the replay that went back, and travel."""
        log(f"resumed from a checkpoint at {self.position()} (event {self.event_index()}) for {state}")
        self.state = state
        self.travel = state.get("travel")
        self._candidate = None
        self._watch_last = None
        self.goto_event = None
        self.pause_requested = False
        self.frontend.resumed(state)
        if not self.dap:
            self._quiet = state.get("shown")
            self._mute()

    def resumed_line(self, frame):
        """A fork resumed from a checkpoint taken at a stop: this line's
        travel step (the stop itself does not happen)."""
        st = self.thread_state()
        if st is None or self.travel is None:
            return
        previous = self.gate.swap(DISABLED)
        try:
            self._travel_line(st, frame)
        finally:
            self.gate.phase = previous

    # Output already shown (pdb): after going back it stays muted until the
    # replay passes the furthest position shown before, except at stops.
    def _quiet_passed(self, st):
        quiet = self._quiet
        if quiet is None:
            return True
        index = self.event_index()
        tid, n = quiet["pos"]
        return (index is not None and index > quiet["event"]) or (st.tid == tid and st.lines >= n)

    def quiet_again(self):
        """After a stop: mute again while before what was shown."""
        if self._quiet is None or self.travel is not None:
            return
        st = self.thread_state()
        if st is not None and self._quiet_passed(st):
            self._quiet = None
            return
        self._mute()

    def _shown_mark(self):
        if self._quiet is not None:
            return self._quiet
        st = self.thread_state()
        if st is None:
            return None
        return {"event": self.event_index() or 0, "pos": [st.tid, st.lines]}

    # Output while travelling: a terminal gets nothing until the target
    # (what it shows again from there on was shown before); a DAP client's
    # files start over and the adapter skips what it has already sent.
    def _mute(self):
        if self._muted is not None:
            return
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        saved = (_dup(1), _dup(2))
        null = _os_open(os.devnull, os.O_WRONLY)
        _dup2(null, 1)
        _dup2(null, 2)
        _os_close(null)
        self._muted = saved

    def unmute(self):
        saved, self._muted = self._muted, None
        if saved is not None:
            _dup2(saved[0], 1)
            _dup2(saved[1], 2)
            _os_close(saved[0])
            _os_close(saved[1])

    @staticmethod
    def _restart_output_files():
        for fd in (1, 2):
            try:
                if _isreg(_fstat(fd).st_mode):
                    _ftruncate(fd, 0)
                    _lseek(fd, 0, 0)
            except OSError:
                pass

    def _trace_on(self):
        if self._tracing:
            return
        self._tracing = True
        if USE_MONITORING:
            self._monitoring_on()
        else:
            import threading
            threading.settrace(self._global)
            sys.settrace(self._global)

    def _trace_off(self):
        if not self._tracing:
            return
        self._tracing = False
        if USE_MONITORING:
            self._monitoring_off()
        else:
            import threading
            threading.settrace(None)
            sys.settrace(None)

    # 3.11: settrace --------------------------------------------------------
    def _global(self, frame, event, arg):
        if _skipped(frame.f_code.co_filename):
            return None
        self._on(frame, event, arg)
        return self._local_fn

    def _local(self, frame, event, arg):
        self._on(frame, event, arg)
        return self._local_fn

    # 3.12+: sys.monitoring --------------------------------------------------
    def _monitoring_on(self):
        mon = sys.monitoring
        tool = mon.DEBUGGER_ID
        if mon.get_tool(tool) is not None:
            tool = next((t for t in range(6) if mon.get_tool(t) is None), None)
            if tool is None:
                raise RuntimeError("no free sys.monitoring tool id for the replay debugger")
        mon.use_tool_id(tool, "retrace debugger")
        self._tool = tool
        E = mon.events
        DISABLE = mon.DISABLE
        on = self._on

        def skip(code):
            return _skipped(code.co_filename)

        def line(code, line_number):
            if skip(code):
                return DISABLE
            on(_getframe(1), "line", None)

        def start(code, offset):
            if skip(code):
                return DISABLE
            on(_getframe(1), "call", None)

        def ret(code, offset, value):
            if skip(code):
                return DISABLE
            on(_getframe(1), "return", value)

        def unwind(code, offset, exc):
            if not skip(code):
                on(_getframe(1), "return", None)

        def raised(code, offset, exc):
            if not skip(code):
                on(_getframe(1), "exception", (type(exc), exc, exc.__traceback__))

        for event, fn in ((E.LINE, line), (E.PY_START, start), (E.PY_RESUME, start),
                          (E.PY_RETURN, ret), (E.PY_YIELD, ret), (E.PY_UNWIND, unwind),
                          (E.RAISE, raised)):
            mon.register_callback(tool, event, fn)
        mon.set_events(tool, E.LINE | E.PY_START | E.PY_RESUME | E.PY_RETURN | E.PY_YIELD
                       | E.PY_UNWIND | E.RAISE)

    def _monitoring_off(self):
        mon = sys.monitoring
        tool = self._tool
        mon.set_events(tool, 0)
        E = mon.events
        for event in (E.LINE, E.PY_START, E.PY_RESUME, E.PY_RETURN, E.PY_YIELD, E.PY_UNWIND, E.RAISE):
            mon.register_callback(tool, event, None)
        mon.free_tool_id(tool)

    # ------------------------------------------------------ every event
    def _on(self, frame, event, arg):
        if self.gate.phase == DISABLED:
            return
        ident = _get_ident()
        st = self.states.get(ident)
        if st is None or not st.stack:
            # A new thread, or one that has no frame of ours: OS idents are
            # reused by the next thread once one ends.
            tid = self.thread_of()
            if tid is None:
                return
            if st is None or st.tid != tid:
                st = self.states[ident] = ThreadState(tid)
                self.by_tid[tid] = st
        if event == "line":
            st.lines += 1
            if self.checkpoints is not None:
                self.checkpoints.maybe_take(st, frame)
            if self.travel is not None:
                previous = self.gate.swap(DISABLED)
                try:
                    self._travel_line(st, frame)
                except BaseException as exc:
                    import traceback
                    log(f"travel failed: {exc!r} " + "".join(traceback.format_exc()))
                    raise
                finally:
                    self.gate.phase = previous
                return
            if self._quiet is not None and self._quiet_passed(st):
                self._quiet = None
                self.unmute()
            if self.goto_event is not None:
                index = self.event_index()
                if index is not None and index >= self.goto_event:
                    self.goto_event = None
                    self._stop(frame, "goto", f"at event {index}")
                    return
            if self.pause_requested:
                self.pause_requested = False
                self._stop(frame, "pause", None)
                return
        elif event == "call":
            st.calls += 1
            st.stack.append(st.calls)
        if self.travel is None:
            self.frontend.trace_dispatch(frame, event, arg)
        if event == "return" and st.stack:
            st.stack.pop()

    def _stop(self, frame, reason, message):
        previous = self.gate.swap(DISABLED)
        try:
            self.frontend.stop_at(frame, reason, message)
        finally:
            self.gate.phase = previous

    # ---------------------------------------------------------- travelling
    def travel_to(self, travel):
        """Go (back) to *travel*: ``{"kind": "position", "target": [tid, n]}``,
        ``{"kind": "event", "event": N}``, ``{"kind": "start"}`` or a search
        ``{"kind": "search", "what": ..., "until": [tid, n], ...}``."""
        state = {"travel": travel, "breaks": self.frontend.export_breaks(), "shown": self._shown_mark()}
        state.update(self.frontend.export_state())
        if self.checkpoints is not None and self.checkpoints.resume_from(state):
            return
        self.reexecute(state)

    def reexecute(self, state):
        env = dict(self.env)
        log(f"re-executing from {self.position()} for {state}")
        _checkpoints.stats["reexecuted"] += 1
        state = dict(state, cp_stats=_checkpoints.stats)
        env[STATE_ENV] = json.dumps(state)
        if self.dap:
            env[DAP_ENV] = self.dap
            for fd in self.dap.split(","):
                os.set_inheritable(int(fd), True)
        if self.checkpoints is not None:
            self.checkpoints.discard_all()
        self.unmute()        # the next process mutes the real output itself
        _execve(sys.executable, [sys.executable] + list(sys.orig_argv[1:]), env)

    def _travel_line(self, st, frame):
        travel = self.travel
        kind = travel["kind"]
        if kind == "start":
            if travel.get("run"):
                # Restarted, running to the first breakpoint.
                self.travel = None
                self.unmute()
                self.frontend.arrived(frame)
                self.frontend.set_continue()
                self.frontend.trace_dispatch(frame, "line", None)
                return
            self._arrive(frame, travel.get("message"))
        elif kind == "position":
            tid, n = travel["target"]
            if st.tid == tid and st.lines >= n:
                self._arrive(frame, travel.get("message"))
        elif kind == "event":
            index = self.event_index()
            if index is not None and index >= travel["event"]:
                self._arrive(frame, travel.get("message") or f"at event {index}")
        elif kind == "search":
            tid, n = travel["until"]
            here = st.tid == tid and st.lines >= n
            self._search_line(travel, st, frame, here)
            if here:
                self._search_done(travel, frame)

    def _arrive(self, frame, message, reason="step"):
        log(f"arrived at {self.position()} ({frame.f_code.co_filename}:{frame.f_lineno})")
        self.travel = None
        self.unmute()
        self.frontend.arrived(frame)
        self.frontend.stop_at(frame, reason, message)

    def _search_line(self, travel, st, frame, here):
        what = travel["what"]
        if what == "rcontinue":
            if not here and self.frontend.would_break(frame):
                self._candidate = [st.tid, st.lines]
        elif what == "rnext":
            if here or st.tid != travel["until"][0]:
                return
            if st.stack and st.stack[-1] in travel["frames"]:
                self._candidate = [st.tid, st.lines]
        elif what == "rwatch":
            if st.tid != travel["until"][0] or not st.stack or st.stack[-1] != travel["frame"]:
                return
            value = _evaluate_repr(travel["expr"], frame, self.gate)
            last = self._watch_last
            if last is not None and value != last[1]:
                # The line at *last* made the change.
                self._candidate = [last[0], value, last[1]]
            self._watch_last = ([st.tid, st.lines], value)

    def _search_done(self, travel, frame):
        what = travel["what"]
        found = self._candidate
        self._candidate = None
        if found is None and travel.get("from_event") is not None:
            # Searched from a checkpoint only: search again from an earlier one.
            again = dict(travel, before=travel.pop("from_event"))
            log(f"nothing found since event {again['before']}: searching from earlier")
            self.travel = again
            self.travel_to(again)
            return
        if found is None:
            notes = {"rcontinue": "no earlier breakpoint hit: stopped where you were",
                     "rnext": "at the start of the program",
                     "rwatch": f"{travel.get('expr')} did not change earlier in this frame"}
            self._arrive(frame, notes[what])
            return
        if what == "rwatch":
            target, new, old = found
            message = f"{travel['expr']} changed here: {old} -> {new}"
        else:
            target, message = found, None
        self.travel = {"kind": "position", "target": target, "message": message}
        self.travel_to(self.travel)

    # ------------------------------------------------------------ commands
    def go_back(self, what, ident=None, **params):
        """rstep / rnext / rcontinue / rwatch / start from the stopped thread."""
        st = self.thread_state(ident)
        if what == "start":
            self.travel_to({"kind": "start", "run": bool(params.get("run"))})
            return
        if st is None:
            raise ValueError("no position here (not a program thread)")
        until = [st.tid, st.lines]
        if what == "rstep":
            if st.lines <= 1:
                self.travel_to({"kind": "start", "message": "at the start of the program"})
                return
            self.travel_to({"kind": "position", "target": [st.tid, st.lines - 1]})
        elif what == "rnext":
            self.travel_to({"kind": "search", "what": "rnext", "until": until, "frames": list(st.stack)})
        elif what == "rcontinue":
            self.travel_to({"kind": "search", "what": "rcontinue", "until": until})
        elif what == "rwatch":
            if not st.stack:
                raise ValueError("no frame to watch in")
            self.travel_to({"kind": "search", "what": "rwatch", "until": until, "frame": st.stack[-1],
                            "expr": params["expr"]})
        else:
            raise ValueError(what)

    def goto(self, index):
        """Run to tape event *index* (forward, or back by re-execution)."""
        here = self.event_index()
        if here is not None and index > here:
            self.goto_event = index
            return "forward"
        self.travel_to({"kind": "event", "event": index})
        return "back"

    # ---------------------------------------------------------- the end
    def post_mortem(self, exc, reason="exception"):
        previous = self.gate.swap(DISABLED)
        try:
            self._trace_off()
            self.unmute()
            self.frontend.post_mortem(exc, reason)
        finally:
            self.gate.phase = previous

    def finished(self, code):
        previous = self.gate.swap(DISABLED)
        try:
            if self.checkpoints is not None:
                self.checkpoints.at_exit()
            self._trace_off()
            self.unmute()
            self.frontend.finished(code)
        finally:
            self.gate.phase = previous


def _evaluate_repr(expr, frame, gate):
    previous = gate.swap(DISABLED)
    try:
        try:
            value = eval(expr, frame.f_globals, frame.f_locals)
        except Exception as exc:
            return f"<{type(exc).__name__}>"
        try:
            return repr(value)
        except Exception as exc:
            return f"<repr failed: {type(exc).__name__}>"
    finally:
        gate.phase = previous


def program_tb(tb):
    """*tb* cut after its last frame that is the program's (not ours)."""
    last = None
    t = tb
    while t is not None:
        if not _skipped(t.tb_frame.f_code.co_filename):
            last = t
        t = t.tb_next
    if last is not None:
        last.tb_next = None
    return tb
