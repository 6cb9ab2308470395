"""The instrumented replay the views are computed from (DESIGN §9).

A recording holds only the boundary. Function spans of the program's own
code, and the calls between its modules and classes, are computed by
*replaying* it with a tracer switched on: ``sys.monitoring`` on 3.12+,
``sys.settrace`` (and ``threading.settrace`` for new threads; line events
off, only the project's frames traced) on 3.11.

The replay runs in a child process (``python -c … _child_main``), exactly as
``python -m retracesoftware --recording PATH`` would replay it, with three
additions made from outside the program:

* a tracer (views/span_tracer.py) that keeps, per logical thread, a stack
  of the project's frames: it counts calls between functions (the
  architecture map) and, when asked, writes every span (start, end, depth)
  to ``spans.bin``;
* the stream reader wrapped so the replay time of every event it hands out
  is written to ``reads.bin`` (event index = position among values and
  NEW_BINDING markers, docs/EVENTS.md), and the byte offset reached goes to
  the parent as progress;
* at exit, ``meta.json``: code and thread tables, call edges, per-function
  counts and times, how the replay ended.

The tracer runs *outside* the recording: it never calls a patched function
(private references taken at import; this module's globals are never
replaced, installer ``_OWN_PREFIXES``), never hashes a program object, keeps
its data in int lists/arrays (no GC-tracked allocation per call, so garbage
collections — and the finalizers they run — happen where they did), and
writes its files with the session's gate DISABLED. The replay stays
faithful: the child exits with the replay's own exit code, and a divergence
is reported as usual (exit 3).

The parent side (`run_instrumented`, `InstrumentedRun`, `stop_at_event`)
is views/instrumented_run.py: it never imports this module nor the
runtime's patches.
"""
from __future__ import annotations

import _thread
import array
import json
import os
import sys
import time

from retracesoftware.views.span_tracer import FLUSH_ITEMS, CodeFilter, Tracer, install_monitoring, install_settrace

_perf_counter_ns = time.perf_counter_ns
_get_ident = _thread.get_ident
_os_write = os.write
_os_open = os.open
_os_close = os.close

PROGRESS_EVERY = 4096     # reads between progress reports

_PY312_PLUS = sys.version_info >= (3, 12)  # PYVERSIONS: sys.monitoring


from retracesoftware.install.gc_points import GC as _GC, GC_VALVE as _GC_VALVE  # noqa: E402

_GC_TAGS = (_GC, _GC_VALVE)


class TimedReader:
    """The stream reader as the replay sees it, plus, for every event it
    hands out (a value or a NEW_BINDING), the event index (the reader's own
    count, the numbering of ``events`` and divergence reports), the replay
    time and the innermost project frame of the consuming thread
    (``reads.bin``: int64 index, int64 ns, int64 code slot); progress (byte
    offset) goes to the parent."""

    stop_at = None          # event index at which to stop (stack_at / eval_at)
    on_stop = None

    def __init__(self, reader, out_dir, progress_fd, gate_box, tracer=None):
        self._reader = reader
        self._items = array.array("q")
        self._fd = _os_open(os.path.join(out_dir, "reads.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._progress_fd = progress_fd
        self._gate_box = gate_box
        self._tracer = tracer
        self._count = 0

    # read/bind are one Python frame each (the tracer sees every frame the
    # replay runs, so helpers would cost per event).
    def read(self):
        value = self._reader.read()
        items = self._items
        index = self._reader.events - 1
        items.append(index)
        items.append(_perf_counter_ns())
        tracer = self._tracer
        if tracer is None:
            items.append(-1)
        else:
            tslot = tracer.thread_slot_of.get(_get_ident())
            stack = tracer.stacks[tslot] if tslot is not None else None
            items.append(stack[-2] if stack else -1)
        if len(items) >= FLUSH_ITEMS * 3:
            self.flush()
        if index == self.stop_at:
            self.on_stop(sys._getframe(1))
        return value

    def bind(self, obj):
        result = self._reader.bind(obj)
        items = self._items
        index = self._reader.events - 1
        items.append(index)
        items.append(_perf_counter_ns())
        tracer = self._tracer
        if tracer is None:
            items.append(-1)
        else:
            tslot = tracer.thread_slot_of.get(_get_ident())
            stack = tracer.stacks[tslot] if tslot is not None else None
            items.append(stack[-2] if stack else -1)
        if len(items) >= FLUSH_ITEMS * 3:
            self.flush()
        if index == self.stop_at:
            self.on_stop(sys._getframe(1))
        return result

    def flush(self):
        items = self._items
        if items:
            gate = self._gate_box[0]
            previous = None
            if gate is not None:
                from retracesoftware.utils import DISABLED
                previous = gate.swap(DISABLED)
            try:
                view = memoryview(items.tobytes())
                while view:
                    view = view[_os_write(self._fd, view):]
                self._count += len(items) // 3
                del items[:]
                if self._progress_fd is not None:
                    try:
                        offset = getattr(self._reader.position, "offset", None)
                        _os_write(self._progress_fd, b"%d %d\n" % (self._count, offset or 0))
                    except OSError:
                        self._progress_fd = None
            finally:
                if previous is not None:
                    gate.phase = previous

    # The native fast paths consume several events in one step, unseen by
    # read()/bind(): the instrumented replay declines them, so the engine
    # reads event by event through the two methods above (every event gets
    # its index, time and frame; stop_at is found).
    def take_call(self, thread, call_tag, name, fp, result_tag, error_tag):
        return None

    def take_event(self, thread, tag, accept):
        # A garbage collection's event (install/gc_points.py) is taken only
        # this way: let it through (its two values get no time or frame).
        if tag in _GC_TAGS:
            return self._reader.take_event(thread, tag, accept)
        return None

    @property
    def thread(self):
        return self._reader.thread

    @property
    def next_kind(self):
        return self._reader.next_kind

    @property
    def position(self):
        return self._reader.position

    def close(self):
        self.flush()
        return self._reader.close()

    def __getattr__(self, name):
        return getattr(self._reader, name)


def _child_main(argv) -> int:
    """Entry of the replay child: ``OUT_DIR RECORDING OPTIONS_JSON``."""
    out_dir, path, options = argv[0], argv[1], json.loads(argv[2])
    progress_fd = options.get("progress_fd")
    from retracesoftware.install import replay_session as install_session
    from retracesoftware import cli

    pre_code_target = options.get("code_target", False)
    # The library folders come from the parent: finding them here would
    # import sysconfig and fill site's USER_BASE before the replay, and the
    # program's own first use of them (their environment reads: hypothesis's
    # pytest plugin at the end of a session) would not happen again.
    tracer = Tracer(out_dir, CodeFilter(options.get("include"), options.get("exclude"),
                                        code_target=pre_code_target, library=options.get("library")),
                    spans=options.get("spans", True), max_depth=options.get("max_depth"))
    gate_box = [None]
    outcome = {"exit_code": None, "divergence": None, "started": False}
    state = {"stop": None, "reader": None}

    Base = install_session.ReplaySession

    class InstrumentedReplaySession(Base):
        # Only the replay's own reader is wrapped (not every reader opened
        # while replaying: start-up may scan the recording with another).
        def __init__(self, reader, *args, **kwargs):
            timed = TimedReader(reader, out_dir, progress_fd, gate_box, tracer)
            state["reader"] = timed
            super().__init__(timed, *args, **kwargs)

        def start(self):
            super().start()
            gate_box[0] = self.system.gate
            tracer.gate = self.system.gate
            tracer.registry = self.threads
            tracer.started_ns = _perf_counter_ns()
            state["stop"] = (install_monitoring if _PY312_PLUS else install_settrace)(tracer)
            outcome["started"] = True      # the program runs under the tracer from here

        def divergence(self, exc):
            outcome["divergence"] = str(exc).splitlines()[0] if str(exc) else "replay diverged"
            _finish()
            return super().divergence(exc)

        def stop_early(self, line, exc=None):
            outcome["divergence"] = line
            _finish()
            return super().stop_early(line, exc)

        def main_finished(self, code):
            outcome["exit_code"] = code
            return super().main_finished(code)

    finished = []

    def _finish():
        if finished:
            return
        finished.append(True)
        stop = state["stop"]
        if stop is not None:
            try:
                stop()
            except Exception:
                pass
        gate = gate_box[0]
        previous = None
        if gate is not None:
            from retracesoftware.utils import DISABLED
            previous = gate.swap(DISABLED)
        try:
            tracer.close_open_frames()
            tracer.flush_spans()
            if state["reader"] is not None:
                state["reader"].flush()
            meta = tracer.meta()
            meta.update(outcome)
            meta["ended_ns"] = _perf_counter_ns()
            meta["python"] = sys.version.split()[0]
            meta["tracer"] = "sys.monitoring" if _PY312_PLUS else "sys.settrace"
            data = json.dumps(meta).encode()
            fd = _os_open(os.path.join(out_dir, "meta.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[_os_write(fd, view):]
            finally:
                _os_close(fd)
        finally:
            if previous is not None:
                gate.phase = previous

    stop_at = options.get("stop_at")
    if stop_at is not None:
        def on_stop(frame):
            _stopped_at(frame, tracer, gate_box[0], out_dir, options.get("expression"))
        TimedReader.stop_at = int(stop_at)
        TimedReader.on_stop = staticmethod(on_stop)

    install_session.ReplaySession = InstrumentedReplaySession
    import atexit
    atexit.register(_finish)      # registered before the session's close: runs after it
    code = cli.main(["--recording", path] + list(options.get("replay_args", [])))
    outcome["exit_code"] = outcome["exit_code"] if outcome["exit_code"] is not None else code
    outcome["replay_exit"] = code
    return code


def _stopped_at(frame, tracer, gate, out_dir, expression):
    """The replay reached the requested event: write the program's stack
    there (and the value of *expression* in its innermost program frame),
    then end the process. Runs DISABLED: an expression's calls are live."""
    from retracesoftware.utils import DISABLED
    previous = gate.swap(DISABLED) if gate is not None else None
    ours = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep
    frames = []
    target = None
    f = frame
    while f is not None:
        filename = f.f_code.co_filename
        if not os.path.realpath(filename).startswith(ours) and filename != "<string>" or (
                filename == "<string>" and f.f_globals.get("__name__") == "__main__"
                and "_child_main" not in f.f_globals):
            project = tracer.slot_of.get(id(f.f_code), -1) >= 0
            frames.append({"file": filename, "line": f.f_lineno,
                           "function": getattr(f.f_code, "co_qualname", f.f_code.co_name), "project": project})
            if target is None and project:
                target = f
        f = f.f_back
    frames.reverse()      # outermost first
    result = {"stack": frames, "thread": None}
    try:
        result["thread"] = tracer.threads[tracer._thread_slot()]
    except Exception:
        pass
    if expression is not None:
        if target is None:
            target = frame
            while target is not None and os.path.realpath(target.f_code.co_filename).startswith(ours):
                target = target.f_back
        if target is None:
            result["error"] = "no program frame at this event"
        else:
            result["frame"] = {"file": target.f_code.co_filename, "line": target.f_lineno,
                               "function": getattr(target.f_code, "co_qualname", target.f_code.co_name)}
            try:
                value = eval(expression, target.f_globals, dict(target.f_locals))
                try:
                    text = repr(value)
                except Exception as exc:
                    text = f"<unprintable {type(value).__name__}: {exc!r}>"
                result["value"] = text if len(text) <= 4000 else text[:4000] + "…"
                result["type"] = type(value).__name__
            except BaseException as exc:
                result["error"] = f"{type(exc).__name__}: {exc}"
    data = json.dumps(result, default=str).encode()
    fd = _os_open(os.path.join(out_dir, "stop.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    view = memoryview(data)
    while view:
        view = view[_os_write(fd, view):]
    _os_close(fd)
    os._exit(0)
