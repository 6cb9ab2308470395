"""The DAP agent inside the replay process (the adapter, dap.py, starts it).

It is a `bdb.Bdb` driven by the engine. Requests reach it on a pipe: those
that need a stopped thread (stackTrace, evaluate, continue, stepBack…) are
served by the thread that stopped, the others (setBreakpoints, threads,
pause, configurationDone) by a reader thread of ours, invisible to the
program (a raw ``_thread`` thread, runtime DISABLED). Everything runs
outside the recording.
"""
from __future__ import annotations

import bdb
import os
import reprlib
import sys
from collections import deque

from retracesoftware.debugger.engine import log
from retracesoftware.debugger.primitives import allocate_lock as _allocate_lock
from retracesoftware.debugger.primitives import get_ident as _get_ident
from retracesoftware.debugger.primitives import get_native_id as _get_native_id
from retracesoftware.debugger.primitives import select as _select
from retracesoftware.debugger.primitives import skipped as _skipped
from retracesoftware.debugger.primitives import start_new_thread as _start_new_thread
from retracesoftware.debugger.frontend import FrontendMixin
from retracesoftware.debugger.protocol import Channel, dap_thread_id, thread_name
from retracesoftware.utils import DISABLED

_exit = os._exit
_pipe = os.pipe
_read = os.read
_write = os.write
_close = os.close
_current_frames = sys._current_frames

_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 20

_RESUMING = {"continue", "next", "stepIn", "stepOut", "stepBack", "reverseContinue", "restart"}


class DapAgent(FrontendMixin, bdb.Bdb):
    def __init__(self, engine, fds):
        bdb.Bdb.__init__(self, skip=["retracesoftware", "retracesoftware.*"])
        self._init_frontend(engine)
        rfd, wfd = (int(x) for x in fds.split(","))
        self.channel = Channel(rfd, wfd, _allocate_lock())
        state = engine.state or {}
        self.stop_on_entry = bool(state.get("stopOnEntry"))
        self.configured = bool(state.get("configured"))
        self._configured_lock = _allocate_lock()
        if not self.configured:
            self._configured_lock.acquire()
        self._inbox = deque()
        self._inbox_ready = _allocate_lock()
        self._inbox_ready.acquire()
        self._stopped_ident = None
        self._stop_frame = None
        self._refs = {}
        self._break_reason = None
        self._wake = None
        self._reader_gone = None
        self._reader_tid = None     # the kernel's id of the reader thread
        self._start_reader()

    def _start_reader(self):
        self._wake = _pipe()
        self._reader_gone = _allocate_lock()
        self._reader_gone.acquire()
        _start_new_thread(self._read_loop, (self._wake[0], self._reader_gone))

    def _stop_reader(self):
        """Wake the reader thread and wait until it has left its loop (what
        it had read stays in the channel's buffer)."""
        if self._wake is None:
            return
        wake_r, wake_w = self._wake
        _write(wake_w, b"x")
        self._reader_gone.acquire()
        _close(wake_r)
        _close(wake_w)
        self._wake = None

    # -- checkpoints: only the active replay reads the adapter's requests -------
    def suspend(self):
        self._stop_reader()
        pending, self.channel._buffer = self.channel._buffer, b""
        return {"dap_pending": pending.decode("latin-1")}

    def unsuspend(self):
        self._start_reader()

    def stop_threads(self):
        if self._wake is None:
            return []
        self._stop_reader()
        return [self._reader_tid]

    def start_threads(self):
        if self._wake is None:
            self._start_reader()

    def resumed(self, state):
        super().resumed(state)
        self.channel._lock = _allocate_lock()      # the fork may have copied it held
        self.channel._buffer = (state.get("dap_pending") or "").encode("latin-1")
        self._inbox = deque()
        self._inbox_ready = _allocate_lock()
        self._inbox_ready.acquire()
        self._stopped_ident = None
        self._stop_frame = None
        self._refs = {}
        self.configured = True
        self._start_reader()

    # -- the channel ----------------------------------------------------------
    def _respond(self, request, success=True, body=None, message=None):
        reply = {"type": "response", "request_seq": request.get("seq"), "command": request.get("command"),
                 "success": success, "body": body or {}}
        if message:
            reply["message"] = message
        self.channel.send(reply)

    def _event(self, event, body=None):
        self.channel.send({"type": "event", "event": event, "body": body or {}})

    def _receive(self, wake_fd):
        """The next request; None at end of input; False when woken."""
        channel = self.channel
        while b"\n" not in channel._buffer:
            ready = _select([channel.rfd, wake_fd], [], [])[0]
            if wake_fd in ready:
                return False
            chunk = _read(channel.rfd, 65536)
            if not chunk:
                return None
            channel._buffer += chunk
        line, channel._buffer = channel._buffer.split(b"\n", 1)
        if not line.strip():
            return self._receive(wake_fd)
        import json
        return json.loads(line)

    def _read_loop(self, wake_fd, gone):
        self._reader_tid = _get_native_id()
        while True:
            try:
                request = self._receive(wake_fd)
            except Exception as exc:
                log(f"agent channel failed: {exc!r}")
                request = None
            if request is False:
                gone.release()
                return
            if request is None:
                # The adapter went away: nobody debugs this replay any more.
                _exit(0)
            try:
                self._dispatch_async(request)
            except Exception as exc:
                self._respond(request, False, message=f"{type(exc).__name__}: {exc}")

    def _dispatch_async(self, request):
        command = request.get("command")
        args = request.get("arguments") or {}
        if command == "setBreakpoints":
            self._respond(request, body=self._set_breakpoints(args))
        elif command == "configurationDone":
            self._respond(request)
            if not self.configured:
                self.configured = True
                self._configured_lock.release()
        elif command == "threads":
            self._respond(request, body={"threads": self._threads()})
        elif command == "pause":
            self.engine.pause_requested = True
            self._respond(request)
        elif command in ("disconnect", "terminate"):
            self._respond(request)
            _exit(0)
        elif self._stopped_ident is not None:
            self._inbox.append(request)
            try:
                self._inbox_ready.release()
            except RuntimeError:
                pass
        else:
            self._respond(request, False, message=f"{command}: the program is running (pause it first)")

    # -- requests that need no stop ---------------------------------------------
    def _set_breakpoints(self, args):
        path = (args.get("source") or {}).get("path")
        filename = self.canonic(path)
        self.clear_all_file_breaks(filename)
        result = []
        for spec in args.get("breakpoints") or ():
            line = int(spec["line"])
            error = self.set_break(filename, line, False, spec.get("condition") or None)
            verified = error is None
            bps = self.get_breaks(filename, line) if verified else []
            result.append({"verified": verified, "line": line, "id": bps[-1].number if bps else None,
                           **({"message": error} if error else {})})
        return {"breakpoints": result}

    def _threads(self):
        seen = sorted({st.tid for st in list(self.engine.states.values())}, key=lambda t: (isinstance(t, str), str(t)))
        if 0 not in seen:
            seen.insert(0, 0)
        return [{"id": dap_thread_id(t), "name": thread_name(t)} for t in seen]

    # -- engine hooks -------------------------------------------------------------
    def at_start(self):
        self._configured_lock.acquire()      # setBreakpoints… configurationDone first
        self._configured_lock.release()
        if self.stop_on_entry:
            self.set_step()
        else:
            self.botframe = sys._getframe()
            self.set_continue()

    def export_state(self):
        return {"configured": True, "stopOnEntry": self.stop_on_entry}

    def break_here(self, frame):
        hit = super().break_here(frame)
        if hit:
            self._break_reason = "breakpoint"
        return hit

    def user_line(self, frame):
        reason = self._break_reason or "step"
        self._break_reason = None
        self._stop(frame, reason)

    def user_call(self, frame, argument_list):
        pass

    def user_return(self, frame, return_value):
        pass          # a step stops at the caller's next line instead

    def user_exception(self, frame, exc_info):
        pass

    def stop_at(self, frame, reason, message):
        self._stop(frame, {"goto": "goto", "pause": "pause"}.get(reason, "step"), text=message)

    def post_mortem(self, exc, reason):
        tb = self.program_traceback(exc)
        frame = None
        while tb is not None:
            frame = tb.tb_frame
            tb = tb.tb_next
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason == "exception":
            message = f"{type(exc).__name__}: {message}"
        self._stop(frame, "exception", text=message, description=message)

    def finished(self, code):
        pass

    # -- a stop ---------------------------------------------------------------------
    def _stop(self, frame, reason, text=None, description=None):
        engine = self.engine
        if reason != "exception" and self.take_stop_checkpoint(frame):
            return            # a fork of this stop's checkpoint, travelling on
        gate = engine.gate
        previous = gate.swap(DISABLED)
        engine.stop_lock.acquire()
        try:
            ident = _get_ident()
            st = engine.thread_state(ident)
            tid = st.tid if st is not None else 0
            self._stopped_ident = ident
            self._stop_frame = frame
            self._refs = {}
            body = {"reason": reason, "threadId": dap_thread_id(tid), "allThreadsStopped": True}
            if text:
                body["text"] = text
            if description:
                body["description"] = description
            self._event("stopped", body)
            while True:
                self._inbox_ready.acquire()
                while self._inbox:
                    request = self._inbox.popleft()
                    try:
                        resumed = self._dispatch_stopped(request, frame)
                    except Exception as exc:
                        self._respond(request, False, message=f"{type(exc).__name__}: {exc}")
                        resumed = False
                    if resumed:
                        return
        finally:
            self._stopped_ident = None
            self._stop_frame = None
            self._refs = {}
            engine.stop_lock.release()
            gate.phase = previous

    def _dispatch_stopped(self, request, frame):
        command = request.get("command")
        args = request.get("arguments") or {}
        if command == "stackTrace":
            self._respond(request, body=self._stack_trace(args))
        elif command == "scopes":
            target = self._refs.get(args.get("frameId"))
            if target is None or not hasattr(target, "f_locals"):
                raise ValueError("unknown frameId")
            self._respond(request, body={"scopes": [
                {"name": "Locals", "variablesReference": self._ref(dict(target.f_locals)), "expensive": False},
                {"name": "Globals", "variablesReference": self._ref(target.f_globals), "expensive": True}]})
        elif command == "variables":
            container = self._refs.get(args.get("variablesReference"))
            if container is None:
                raise ValueError("unknown variablesReference")
            self._respond(request, body={"variables": self._variables(container)})
        elif command == "evaluate":
            self._respond(request, body=self._evaluate(args, frame))
        elif command in _RESUMING:
            return self._resume(command, request, frame)
        else:
            self._respond(request, False, message=f"{command} is not supported")
        return False

    def _resume(self, command, request, frame):
        if command == "continue":
            self._respond(request, body={"allThreadsContinued": True})
            self.set_continue()
        elif command == "next":
            self._respond(request)
            self.set_next(frame)
        elif command == "stepIn":
            self._respond(request)
            self.set_step()
        elif command == "stepOut":
            self._respond(request)
            self.set_return(frame)
        else:
            what = {"stepBack": "rnext", "reverseContinue": "rcontinue", "restart": "start"}[command]
            self._respond(request)
            # Re-executes the replay: does not return.
            self.engine.go_back(what, ident=self._stopped_ident, run=not self.stop_on_entry)
        if frame is None:           # post-mortem: the program goes on to its end
            self.set_continue()
        return True

    # -- frames and values ---------------------------------------------------------
    def _ref(self, obj):
        ref = len(self._refs) + 1
        self._refs[ref] = obj
        return ref

    def _frames_of(self, ident):
        if ident == self._stopped_ident:
            frame = self._stop_frame
        else:
            frame = _current_frames().get(ident)
        frames = []
        while frame is not None:
            if not _skipped(frame.f_code.co_filename):
                frames.append(frame)
            frame = frame.f_back
        return frames

    def _stack_trace(self, args):
        tid_wanted = args.get("threadId")
        ident = None
        for i, st in list(self.engine.states.items()):
            if dap_thread_id(st.tid) == tid_wanted:
                ident = i
        frames = self._frames_of(ident) if ident is not None else []
        start = int(args.get("startFrame") or 0)
        levels = int(args.get("levels") or 0) or len(frames)
        out = []
        for frame in frames[start:start + levels]:
            path = frame.f_code.co_filename
            out.append({"id": self._ref(frame), "name": frame.f_code.co_name,
                        "source": {"path": path, "name": os.path.basename(path)},
                        "line": frame.f_lineno, "column": 1})
        return {"stackFrames": out, "totalFrames": len(frames)}

    def _value(self, name, value):
        try:
            text = _repr.repr(value)
        except Exception as exc:
            text = f"<repr failed: {type(exc).__name__}>"
        children = isinstance(value, (dict, list, tuple, set, frozenset)) and len(value) > 0 \
            or (hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value))
        return {"name": str(name), "value": text, "type": type(value).__name__,
                "variablesReference": self._ref(value) if children else 0}

    def _variables(self, container):
        if isinstance(container, dict):
            items = list(container.items())
        elif isinstance(container, (list, tuple)):
            items = list(enumerate(container))
        elif isinstance(container, (set, frozenset)):
            items = list(enumerate(sorted(container, key=repr)))
        else:
            items = list(vars(container).items())
        items = [(k, v) for k, v in items if not (isinstance(k, str) and k.startswith("__"))][:200]
        return [self._value(k, v) for k, v in items]

    def _evaluate(self, args, stopped_frame):
        frame = self._refs.get(args.get("frameId")) if args.get("frameId") is not None else stopped_frame
        if frame is None or not hasattr(frame, "f_globals"):
            frame = stopped_frame
        expression = args.get("expression") or ""
        if frame is None:
            raise ValueError("no frame to evaluate in")
        value = eval(expression, frame.f_globals, frame.f_locals)
        shown = self._value(expression, value)
        return {"result": shown["value"], "type": shown["type"],
                "variablesReference": shown["variablesReference"]}
