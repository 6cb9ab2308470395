"""The import hook's functions (`Installer._install_import_hook`).

Each install runs them with globals of its own (`bind`): ``gate``,
``state``, ``installer``, ``DISABLED``, ``INTERNAL``,
``original_find_and_load``, ``original_call``, ``c_level_patchers``,
``sys``; for the loader functions also ``find_spec``, ``stdlib_loaders``
and ``injected``. They run under importlib's file name, and the loader's
exec under the name of importlib's ``_call_with_frames_removed``: CPython
and pytest drop such frames from tracebacks of failing imports, as they
drop importlib's own. Written here (compiled once, into the package's
bytecode) rather than compiled from a string at every start: two compiles
were about 1.5 ms of a record's start.
"""
# flake8: noqa: F821  (the names above are the bound globals)
from types import FunctionType

__all__ = ["bind", "HOOK", "LOADER_EXEC"]

_IMPORTLIB_FILE = "<frozen importlib._bootstrap>"


def _find_and_load(name, import_):
    outer = gate.phase
    stack = getattr(state, "outer", None)
    if stack is None:
        stack = state.outer = []
    stack.append(outer)
    if outer == INTERNAL:
        gate.phase = DISABLED
    try:
        owners = c_level_patchers.get(name)
        if owners is not None and name not in sys.modules:
            module = installer._with_originals(original_find_and_load, owners)(name, import_)
        else:
            module = original_find_and_load(name, import_)
    finally:
        stack.pop()
        gate.phase = outer
    if name in installer._pending:
        replaced = installer._patch_module(name)
        if replaced:
            installer._replace_everywhere(replaced)
    if name in installer._on_import:
        fn = installer._on_import.pop(name)
        installer._applied.setdefault(name, []).append(fn)
        fn(module)
    return module


def _call_with_frames_removed(f, *args, **kwds):
    # Module bodies (and extension-module init) run in the phase of whoever
    # imported them, so a module's top-level clock read is recorded.
    stack = getattr(state, "outer", None)
    if stack and stack[-1] == INTERNAL and gate.phase == DISABLED:
        gate.phase = INTERNAL
        try:
            return f(*args, **kwds)
        finally:
            gate.phase = DISABLED
    return f(*args, **kwds)


def _call_with_frames_removed_exec(source, globals=None, locals=None, /, **kwds):
    # The `exec` given to a loader that runs module bodies itself (pytest's
    # assertion rewriter, zipimport): a module body being imported runs in
    # the importer's phase.
    stack = getattr(state, "outer", None)
    if (stack and stack[-1] == INTERNAL and gate.phase == DISABLED and type(globals) is dict
            and sys.modules.get(globals.get("__name__")) is not None
            and getattr(sys.modules[globals["__name__"]], "__dict__", None) is globals):
        gate.phase = INTERNAL
        try:
            return _real_exec(source, globals, locals, **kwds)
        finally:
            gate.phase = DISABLED
    if globals is None:
        frame = sys._getframe(1)
        globals = frame.f_globals
        if locals is None:
            locals = frame.f_locals
    return _real_exec(source, globals, locals, **kwds)


def _find_spec(name, path, target=None):
    spec = find_spec(name, path, target)
    loader = getattr(spec, "loader", None) if spec is not None else None
    if loader is not None:
        module_name = getattr(type(loader), "__module__", None)
        if module_name not in stdlib_loaders and module_name not in injected:
            module = sys.modules.get(module_name)
            namespace_ = getattr(module, "__dict__", None)
            if type(namespace_) is dict and "exec" not in namespace_:
                namespace_["exec"] = _call_with_frames_removed_exec
                injected[module_name] = module
    return spec


#: (function, the name it runs under): the hook on importlib's _find_and_load
HOOK = ((_find_and_load, "_find_and_load"), (_call_with_frames_removed, "_call_with_frames_removed"))
#: the exec given to other loaders, and the _find_spec that gives it
LOADER_EXEC = ((_call_with_frames_removed_exec, "_call_with_frames_removed"), (_find_spec, "_find_spec"))


def bind(functions, namespace: dict) -> None:
    """Put into *namespace* each of *functions* (HOOK or LOADER_EXEC) with
    *namespace* as its globals, under importlib's file name and the name it
    runs under; *namespace* keys are the functions' own names."""
    namespace.setdefault("__builtins__", __builtins__)
    namespace.setdefault("_real_exec", exec)
    for fn, runs_as in functions:
        code = fn.__code__.replace(co_filename=_IMPORTLIB_FILE, co_name=runs_as, co_qualname=runs_as)
        bound = FunctionType(code, namespace, runs_as, fn.__defaults__)
        bound.__kwdefaults__ = fn.__kwdefaults__
        namespace[fn.__name__] = bound
