"""Debuggers inside a recorded or replayed program (DESIGN §1, issue 8).

``breakpoint()``, ``pdb`` and ``--pdb`` must work on a replay: the debugger's
own terminal I/O, file reads (``.pdbrc``, source lines) and imports are never
taken from (or written to) the recording. Every entry point of bdb/pdb runs
with the runtime DISABLED and gives the program its phase back when it
resumes; expressions typed at the prompt run disabled too (real calls).
"""
from __future__ import annotations

import functools
import sys

from retracesoftware.utils import DISABLED

# (module, class, methods): every way control enters the debugger.
_ENTRY_POINTS = (
    # Not run/runcall/runeval: they execute the program itself, which must
    # keep its own phase.
    ("bdb", "Bdb", ("trace_dispatch", "set_trace", "reset")),
    ("pdb", "Pdb", ("__init__", "interaction", "set_trace")),
)


def _disabled_method(gate, method):
    takes_frame = method.__name__ == "set_trace"
    is_init = method.__name__ == "__init__"

    @functools.wraps(method)
    def run_disabled(*args, **kwargs):
        if takes_frame and len(args) < 2 and kwargs.get("frame") is None:
            # Bdb.set_trace(frame=None) would stop in this wrapper's frame.
            kwargs["frame"] = sys._getframe(1)
        if is_init:
            # Never stop or step inside our own frames (this wrapper, the
            # Python backend's Gate property): the user debugs the program.
            # Pdb(self, completekey, stdin, stdout, skip, ...)
            skip = kwargs.get("skip") if "skip" in kwargs else (args[4] if len(args) > 4 else None)
            patterns = set(skip or ()) | {"retracesoftware", "retracesoftware.*"}
            if len(args) > 4:
                args = args[:4] + (patterns,) + args[5:]
            else:
                kwargs["skip"] = patterns
        previous = gate.swap(DISABLED)
        self = args[0] if args else None
        # The debugger talks to the real terminal: the program's sys.stdin
        # may be the recorded one (install/session_base.py reopens a piped stdin).
        program_stdin, real_stdin = sys.stdin, sys.__stdin__
        swap = real_stdin is not None and program_stdin is not real_stdin
        if swap:
            sys.stdin = real_stdin
        try:
            return method(*args, **kwargs)
        finally:
            if swap and sys.stdin is real_stdin:
                sys.stdin = program_stdin
            if method.__name__ == "interaction":
                _forget_frames(self)
            gate.phase = previous
    run_disabled.__retrace_disabled__ = True
    return run_disabled


def _forget_frames(debugger) -> None:
    """Drop what the debugger still holds of the program once it resumes:
    a stopped frame's locals (pdb's ``curframe_locals`` snapshot) would keep
    the program's objects alive past their recorded death (a thread pool
    whose threads then stay in ``concurrent.futures``' exit queue, a file
    closed later), so finalizers and exit handlers would make other calls
    than recorded."""
    for name in ("curframe_locals", "frame_returning"):
        try:
            if getattr(debugger, name, None) is not None:
                setattr(debugger, name, None)
        except Exception:
            pass


# linecache functions the program (traceback, warnings, inspect) may call.
_LINECACHE_FUNCTIONS = ("getline", "getlines", "checkcache", "updatecache", "lazycache", "clearcache")


_PRIVATE_LINECACHE = []


def private_linecache_module():
    """A second ``linecache`` module (its own cache), made once per process:
    made at every install, it went through importlib's finders, which read
    ``sys.implementation.cache_tag``, so a test that had replaced
    ``sys.implementation`` (packaging's ``test_sys_implementation_name``)
    broke the next install under ``pytest --retrace``."""
    if not _PRIVATE_LINECACHE:
        import importlib.util
        spec = importlib.util.find_spec("linecache")
        private = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(private)
        _PRIVATE_LINECACHE.append(private)
    return _PRIVATE_LINECACHE[0]


def _private_linecache(gate, set_attr) -> None:
    """Source lines read by the debugger or by our runtime (any phase but the
    program's) go to a cache of their own: pdb filling ``linecache`` with
    app.py made the program's later traceback skip the reads of app.py its
    recording has (divergence). The program's cache sees exactly its own
    calls, in record and in replay."""
    import linecache
    private = private_linecache_module()
    for name in _LINECACHE_FUNCTIONS:
        program_fn = getattr(linecache, name, None)
        ours = getattr(private, name, None)
        if program_fn is None or ours is None or getattr(program_fn, "__retrace_linecache__", False):
            continue

        def dispatch(*args, _program=program_fn, _ours=ours, **kwargs):
            if gate.phase == DISABLED:
                return _ours(*args, **kwargs)
            return _program(*args, **kwargs)
        dispatch.__name__ = name
        dispatch.__wrapped__ = program_fn
        dispatch.__retrace_linecache__ = True
        set_attr(linecache, name, dispatch)


def _make_breakpointhook(gate):
    """``sys.breakpointhook`` honouring PYTHONBREAKPOINT like CPython's, whose
    imports happen outside the recording, stopping in the caller's frame."""
    environ = __import__("posix").environ  # the real environment, never recorded

    def breakpointhook(*args, **kwargs):
        hookname = environ.get(b"PYTHONBREAKPOINT", b"").decode("utf-8", "replace")
        if hookname == "0":
            return None
        engine_mod = sys.modules.get("retracesoftware.debugger.engine")
        engine = getattr(getattr(engine_mod, "Engine", None), "active", None)
        if engine is not None and (not hookname or hookname == "pdb.set_trace"):
            # The replay debugger runs (--pdb, DAP): stop there at the next line.
            previous = gate.swap(DISABLED)
            try:
                engine.frontend.set_trace(sys._getframe(1))
            finally:
                gate.phase = previous
            return None
        previous = gate.swap(DISABLED)
        try:
            if not hookname or hookname == "pdb.set_trace":
                import pdb
                debugger = pdb.Pdb()
                call = None
            else:
                import importlib
                modname, _, funcname = hookname.rpartition(".")
                call = getattr(importlib.import_module(modname or "builtins"), funcname)
        except Exception:
            import warnings
            warnings.warn(f"Ignoring unimportable $PYTHONBREAKPOINT: {hookname!r}", RuntimeWarning)
            return None
        finally:
            gate.phase = previous
        if call is None:
            return debugger.set_trace(sys._getframe(1))
        return call(*args, **kwargs)
    return breakpointhook


def install(system, set_attr, when_imported=None) -> None:
    """Wrap the debugger classes; ``set_attr(owner, name, value)`` records undo.
    With ``when_imported(name, fn)`` (Installer.when_imported) a debugger
    module not loaded yet is wrapped when it is imported (before anything
    can use it), so a run without a debugger does not import pdb's dozen
    modules at start; without it they are imported now."""
    gate = system.gate

    def wrap(module):
        for module_name, class_name, methods in _ENTRY_POINTS:
            if module_name != module.__name__:
                continue
            cls = getattr(module, class_name)
            for name in methods:
                method = cls.__dict__.get(name)
                if method is None or getattr(method, "__retrace_disabled__", False):
                    continue
                set_attr(cls, name, _disabled_method(gate, method))

    for module_name in ("bdb", "pdb"):
        if when_imported is None:
            wrap(__import__(module_name))
        else:
            when_imported(module_name, wrap)
    _private_linecache(gate, set_attr)
    if sys.breakpointhook is sys.__breakpointhook__:
        set_attr(sys, "breakpointhook", _make_breakpointhook(gate))


def make_debugger(system):
    """A pdb.Pdb built outside the recording (for --pdb)."""
    import pdb
    gate = system.gate
    previous = gate.swap(DISABLED)
    try:
        return pdb.Pdb()
    finally:
        gate.phase = previous


def post_mortem(system, exc) -> None:
    """Open pdb at the program frame where the replay diverged."""
    import pdb
    gate = system.gate
    previous = gate.swap(DISABLED)
    try:
        tb = exc.__traceback__
        debugger = pdb.Pdb()
        debugger.reset()
        debugger.interaction(None, tb)
    finally:
        gate.phase = previous
