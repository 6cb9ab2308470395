"""The tracer of the instrumented replay (views/instrument.py runs it in
the replay child): per logical thread, a stack of the project's own frames
(`CodeFilter` says which code that is); calls between functions counted
(the architecture map), per-function counts and times, and, when asked,
every span (start, end, depth) written to ``spans.bin``.

Switched on by `install_monitoring` (``sys.monitoring``, 3.12+) or
`install_settrace` (``sys.settrace`` and ``threading.settrace``, 3.11; line
events off, only the project's frames traced); each returns its ``stop()``.

Runs *outside* the recording (views/instrument.py says how): private
references taken at import, int lists/arrays only, its files written with
the gate DISABLED, callbacks that never raise.
"""
from __future__ import annotations

import _thread
import array
import os
import sys
import time

from retracesoftware.views.instrumented_run import SPAN_FIELDS

_perf_counter_ns = time.perf_counter_ns
_get_ident = _thread.get_ident
_os_write = os.write
_os_open = os.open

FLUSH_ITEMS = 1 << 16     # items buffered before a write to disk


def library_dirs() -> tuple[str, ...]:
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

    def __init__(self, include=(), exclude=(), *, code_target=False, library=None):
        self.include = tuple(include or ())
        self.exclude = tuple(exclude or ())
        self.code_target = code_target
        self.library = tuple(library) if library is not None else library_dirs()

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
                if len(spans) >= FLUSH_ITEMS * SPAN_FIELDS:
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


def install_settrace(tracer):
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


def install_monitoring(tracer):
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
