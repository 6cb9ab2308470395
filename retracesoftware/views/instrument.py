"""The instrumented replay the views are computed from (DESIGN §9).

A recording holds only the boundary. Function spans of the program's own
code, and the calls between its modules and classes, are computed by
*replaying* it with a tracer switched on: ``sys.monitoring`` on 3.12+,
``sys.settrace`` (and ``threading.settrace`` for new threads; line events
off, only the project's frames traced) on 3.11.

The replay runs in a child process (``python -c … _child_main``), exactly as
``python -m retracesoftware --recording PATH`` would replay it, with three
additions made from outside the program:

* a tracer that keeps, per logical thread, a stack of the project's frames:
  it counts calls between functions (the architecture map) and, when asked,
  writes every span (start, end, depth) to ``spans.bin``;
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

from retracesoftware.views.instrumented_run import SPAN_FIELDS

_perf_counter_ns = time.perf_counter_ns
_get_ident = _thread.get_ident
_os_write = os.write
_os_open = os.open
_os_close = os.close

_FLUSH_ITEMS = 1 << 16
PROGRESS_EVERY = 4096     # reads between progress reports

_PY312_PLUS = sys.version_info >= (3, 12)  # PYVERSIONS: sys.monitoring


def _library_dirs() -> tuple[str, ...]:
    """Folders whose code is not the project's: the standard library,
    site-packages (of this venv and the base interpreter), and us."""
    import sysconfig
    dirs = set()
    for scheme_vars in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        try:
            paths = sysconfig.get_paths(vars=scheme_vars) if scheme_vars else sysconfig.get_paths()
        except Exception:
            continue
        for key in ("stdlib", "platstdlib", "purelib", "platlib"):
            if paths.get(key):
                dirs.add(os.path.realpath(paths[key]))
    try:
        import site
        for entry in site.getsitepackages() + [site.getusersitepackages()]:
            dirs.add(os.path.realpath(entry))
    except Exception:
        pass
    here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))   # retracesoftware/
    dirs.add(here)
    return tuple(sorted(d.rstrip(os.sep) + os.sep for d in dirs))


class CodeFilter:
    """Which code objects are "the project's own code".

    By default: real files outside the standard library, site-packages and
    retracesoftware (plus ``<string>`` when the program is ``-c code``).
    ``include`` / ``exclude`` are fnmatch patterns matched against the file
    path and the module name (VizTracer's ``--include_files`` /
    ``--exclude_files``, made glob-aware): with ``include`` only matching code
    is traced (even library code); ``exclude`` always wins."""

    def __init__(self, include=(), exclude=(), *, code_target=False):
        self.include = tuple(include or ())
        self.exclude = tuple(exclude or ())
        self.code_target = code_target
        self.library = _library_dirs()

    @staticmethod
    def _matches(patterns, filename, module) -> bool:
        import fnmatch
        for pattern in patterns:
            if (fnmatch.fnmatchcase(filename, pattern) or fnmatch.fnmatchcase(module, pattern)
                    or filename.startswith(pattern) or module == pattern
                    or module.startswith(pattern + ".")
                    or (os.sep not in pattern and fnmatch.fnmatchcase(os.path.basename(filename), pattern))):
                return True
        return False

    def wants(self, filename: str, module: str) -> bool:
        if self.exclude and self._matches(self.exclude, filename, module):
            return False
        if self.include:
            return self._matches(self.include, filename, module)
        if filename.startswith("<"):
            return self.code_target and filename == "<string>"
        real = os.path.realpath(filename)
        return not any(real.startswith(d) for d in self.library)


class Tracer:
    """Per-thread stacks of project frames; edges; spans to a file."""

    def __init__(self, out_dir, code_filter, *, spans=True, max_depth=None):
        self.out_dir = out_dir
        self.filter = code_filter
        self.want_spans = spans
        self.max_depth = max_depth
        self.codes = []                # slot -> code object (kept alive: ids stay unique)
        self.code_info = []            # slot -> [filename, qualname, module, firstlineno]
        self.slot_of = {}              # id(code) -> slot, or -1 when not traced
        self.threads = []              # thread slot -> logical thread id
        self.thread_slot_of = {}       # real ident -> thread slot
        self.stacks = []               # thread slot -> [code slot, start ns, code slot, start ns, ...]
        self.edges = {}                # caller_slot * 2**20 + callee_slot -> count (caller -1: none)
        self.calls = array.array("q")  # code slot -> calls
        self.total_ns = array.array("q")   # code slot -> inclusive time
        self.spans = array.array("q")
        self.spans_written = 0
        self.spans_fd = None
        self.registry = None
        self.gate = None
        self.started_ns = _perf_counter_ns()
        self.active = False

    # ----------------------------------------------------------- slots
    def _code_slot(self, code, frame):
        slot = self.slot_of.get(id(code))
        if slot is not None:
            return slot
        module = ""
        try:
            if frame is not None:
                module = frame.f_globals.get("__name__", "") or ""
        except Exception:
            module = ""
        if type(module) is not str:
            module = ""
        filename = code.co_filename
        # Our own work (realpath, fnmatch, imports) must not reach the tape.
        previous = self._disabled()
        try:
            wanted = self.filter.wants(filename, module)
        except Exception:
            wanted = False
        finally:
            if previous is not None:
                self.gate.phase = previous
        if not wanted:
            self.slot_of[id(code)] = -1
            self.codes.append(code)
            return -1
        slot = len(self.code_info)
        self.codes.append(code)
        self.code_info.append([filename, getattr(code, "co_qualname", code.co_name), module,
                               code.co_firstlineno])
        self.calls.append(0)
        self.total_ns.append(0)
        self.slot_of[id(code)] = slot
        return slot

    def _thread_slot(self):
        ident = _get_ident()
        slot = self.thread_slot_of.get(ident)
        if slot is not None:
            return slot
        logical = None
        registry = self.registry
        if registry is not None:
            try:
                logical = registry.logical_id(ident)
            except Exception:
                logical = None
        slot = len(self.threads)
        self.threads.append(logical if isinstance(logical, (int, str)) else None)
        self.stacks.append([])
        self.thread_slot_of[ident] = slot
        return slot

    # ----------------------------------------------------------- events
    def innermost(self):
        """Code slot of the calling thread's innermost project frame, or -1."""
        tslot = self.thread_slot_of.get(_get_ident())
        if tslot is None:
            return -1
        stack = self.stacks[tslot]
        return stack[-2] if stack else -1

    def begin(self, code, frame, is_call):
        slot = self._code_slot(code, frame)
        if slot < 0:
            return False
        tslot = self._thread_slot()
        stack = self.stacks[tslot]
        if is_call:
            caller = stack[-2] if stack else -1
            key = caller * 1048576 + slot
            self.edges[key] = self.edges.get(key, 0) + 1
            self.calls[slot] += 1
        stack.append(slot)
        stack.append(_perf_counter_ns())
        return True

    def end(self, code):
        slot = self.slot_of.get(id(code), -1)
        if slot < 0:
            return
        now = _perf_counter_ns()
        tslot = self._thread_slot()
        stack = self.stacks[tslot]
        # Unwind to the frame that ends (a frame we missed the end of —
        # e.g. tracing switched on inside it — is closed here too).
        while stack:
            start = stack.pop()
            top = stack.pop()
            depth = len(stack) // 2
            self.total_ns[top] += now - start
            if self.want_spans and (self.max_depth is None or depth < self.max_depth):
                spans = self.spans
                spans.append(tslot)
                spans.append(top)
                spans.append(depth)
                spans.append(start)
                spans.append(now)
                if len(spans) >= _FLUSH_ITEMS * SPAN_FIELDS:
                    self.flush_spans()
            if top == slot:
                break
        if not stack:
            # The thread's outermost project frame ended: its ident may be
            # reused by another logical thread.
            self.thread_slot_of.pop(_get_ident(), None)
            self.stacks[tslot] = stack

    # ----------------------------------------------------------- output
    def _disabled(self):
        gate = self.gate
        if gate is None:
            return None
        from retracesoftware.utils import DISABLED
        return gate.swap(DISABLED)

    def flush_spans(self):
        if not self.spans:
            return
        previous = self._disabled()
        try:
            if self.spans_fd is None:
                self.spans_fd = _os_open(os.path.join(self.out_dir, "spans.bin"),
                                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            data = self.spans.tobytes()
            view = memoryview(data)
            while view:
                n = _os_write(self.spans_fd, view)
                view = view[n:]
            self.spans_written += len(self.spans) // SPAN_FIELDS
            del self.spans[:]
        finally:
            if previous is not None:
                self.gate.phase = previous

    def close_open_frames(self):
        """Frames still open at exit (daemon threads, os._exit) end now."""
        now = _perf_counter_ns()
        for tslot, stack in enumerate(self.stacks):
            while stack:
                start = stack.pop()
                top = stack.pop()
                depth = len(stack) // 2
                self.total_ns[top] += now - start
                if self.want_spans and (self.max_depth is None or depth < self.max_depth):
                    self.spans.extend((tslot, top, depth, start, now))

    def meta(self) -> dict:
        edges = []
        for key, count in self.edges.items():
            caller, callee = divmod(key, 1048576)   # caller -1 (no project caller) floors to -1
            edges.append([caller, callee, count])
        return {
            "codes": self.code_info,
            "threads": self.threads,
            "edges": edges,
            "calls": list(self.calls),
            "total_ns": list(self.total_ns),
            "spans": self.spans_written,
            "started_ns": self.started_ns,
        }


# ---------------------------------------------------------------- hooks
def _install_settrace(tracer):
    """3.11: ``sys.settrace`` on this thread, ``threading.settrace`` for new
    ones. Cheaper than ``sys.setprofile`` (which calls back on every C call
    too): the global trace function runs once per new frame; only frames of
    the project's code get a local trace function, with line events off, so
    it sees just their return."""
    import threading
    begin, end = tracer.begin, tracer.end

    # A trace function must never raise: the exception would surface in the
    # program (and printing it reads files — through the recording).
    def local(frame, event, arg):
        if event == "return":
            try:
                end(frame.f_code)
            except Exception:
                pass
        return local

    known = tracer.slot_of

    def trace(frame, event, arg):
        if event == "call":
            if known.get(id(frame.f_code), 0) < 0:      # seen before, not the project's
                return None
            try:
                if begin(frame.f_code, frame, True):
                    frame.f_trace_lines = False
                    return local
            except Exception:
                pass
        return None

    sys.settrace(trace)
    threading.settrace(trace)

    def stop():
        sys.settrace(None)
        threading.settrace(None)
    return stop


def _install_monitoring(tracer):
    """3.12+: sys.monitoring, one tool id; code outside the project is
    disabled per location after its first event (cheap)."""
    mon = sys.monitoring
    tool = None
    for candidate in (mon.PROFILER_ID, 3, 4, 5):
        try:
            mon.use_tool_id(candidate, "retrace-views")
        except ValueError:
            continue
        tool = candidate
        break
    if tool is None:
        raise RuntimeError("no free sys.monitoring tool id for the instrumented replay")
    DISABLE = mon.DISABLE
    E = mon.events
    begin, end = tracer.begin, tracer.end
    getframe = sys._getframe

    # A callback must never raise: the exception would surface in the
    # program (and printing it reads files — through the recording).
    def on_start(code, offset):
        try:
            if not begin(code, getframe(1), True):
                return DISABLE
        except Exception:
            return DISABLE

    def on_resume(code, offset):
        try:
            if not begin(code, getframe(1), False):
                return DISABLE
        except Exception:
            return DISABLE

    def on_throw(code, offset, exc):
        try:
            begin(code, getframe(1), False)
        except Exception:
            pass

    def on_end(code, offset, value):
        try:
            if tracer.slot_of.get(id(code), -1) < 0:
                return DISABLE
            end(code)
        except Exception:
            pass

    def on_unwind(code, offset, exc):
        try:
            end(code)
        except Exception:
            pass

    mon.register_callback(tool, E.PY_START, on_start)
    mon.register_callback(tool, E.PY_RESUME, on_resume)
    mon.register_callback(tool, E.PY_THROW, on_throw)
    mon.register_callback(tool, E.PY_RETURN, on_end)
    mon.register_callback(tool, E.PY_YIELD, on_end)
    mon.register_callback(tool, E.PY_UNWIND, on_unwind)
    mon.set_events(tool, E.PY_START | E.PY_RESUME | E.PY_THROW | E.PY_RETURN | E.PY_YIELD | E.PY_UNWIND)

    def stop():
        mon.set_events(tool, 0)
        for event in (E.PY_START, E.PY_RESUME, E.PY_THROW, E.PY_RETURN, E.PY_YIELD, E.PY_UNWIND):
            mon.register_callback(tool, event, None)
        mon.free_tool_id(tool)
    return stop


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
        if len(items) >= _FLUSH_ITEMS * 3:
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
        if len(items) >= _FLUSH_ITEMS * 3:
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
    tracer = Tracer(out_dir, CodeFilter(options.get("include"), options.get("exclude"),
                                        code_target=pre_code_target),
                    spans=options.get("spans", True), max_depth=options.get("max_depth"))
    gate_box = [None]
    outcome = {"exit_code": None, "divergence": None}
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
            state["stop"] = (_install_monitoring if _PY312_PLUS else _install_settrace)(tracer)

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
