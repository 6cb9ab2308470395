"""Turn a BoundaryConfig into patches on a live interpreter, and undo them.

* Module functions named by ``proxy`` are replaced by the System's gateways —
  in their module *and* wherever another loaded module holds a copy
  (``from time import time``), found in one pass over every module dict.
* Types get their methods/getters routed through the System (``patch_type``).
* ``bind`` marks existing singletons (``random._inst``, ``os.environ``) external.
* ``disable`` functions run with the runtime off; ``callback`` arguments are
  wrapped so external code calling back into the program is recorded.
* Modules imported later are patched the moment they finish loading (an
  import hook around ``importlib._bootstrap._find_and_load``). The import
  machinery itself (finding and reading source files) runs with the runtime
  disabled — code is live, only data is recorded — while module bodies run
  in the importer's phase, so a module's top-level clock read is recorded.
* ``open()`` gets a raw layer in Python (install/files.py) so file bytes cross
  the ``os`` boundary.

Everything is undone by ``uninstall()``; installing twice is an error.
"""
from __future__ import annotations

import _io
import builtins
import functools
import sys
import threading

from retracesoftware.utils.log import Log
from retracesoftware.install import boundary as _boundary, buffers, files, fs, report
from retracesoftware.install import import_hook as _import_hook
from retracesoftware.install.substitutes import builtin_function, like_builtin, substitute_for
from retracesoftware.proxy.system import Callback as _Callback
from retracesoftware.utils import DISABLED, INTERNAL, index_namespace as _index_namespace
from retracesoftware.utils.errors import RecordingError, RetraceError

log = Log("retracesoftware")   # (utils/log.py: logging is not imported at start-up)

_importlib_bootstrap = sys.modules["importlib._bootstrap"]
_real_exit = __import__("posix")._exit   # before any patch
_real_scandir = fs._real_scandir
_METHOD_TYPES = (type(len), type([].append), type(object().__str__), type(_io.open.__call__))
import types as _types  # noqa: E402
_METHOD_TYPES = _METHOD_TYPES + (_types.MethodType,)
_FunctionType = _types.FunctionType
# Where a reference to a patched function can sit (see _reference_index).
_IN_MODULE, _IN_CLASS, _IN_DEFAULTS, _IN_KWDEFAULTS, _IN_CELL, _IN_STATICMETHOD = range(6)
_BuiltinType = type(len)

#: Types of values the reference index leaves out (exact types: a subclass
#: is indexed). Patched values are functions, builtins and types, never
#: these data and descriptor types (ModuleSpec the last); they are 60% of
#: what module globals, class attributes and defaults hold. A replacement
#: of one rescans with them (``_reference_index(full=True)``).
_UNINDEXED = frozenset((int, str, bool, float, bytes, type(None), complex, tuple, list, dict, set,
                        frozenset, property, _types.GetSetDescriptorType, _types.MemberDescriptorType,
                        _types.ModuleType, __import__("_frozen_importlib").ModuleSpec))

# Our own modules never get their references replaced: they keep the private
# copies they took at import.
_OWN_PREFIXES = ("retracesoftware", "msgpack")


def _is_classmethod(cls, name: str) -> bool:
    value = cls.__dict__.get(name)
    return isinstance(value, classmethod) or type(value).__name__ == "classmethod_descriptor"


def _has_attr(cls, name: str) -> bool:
    try:
        getattr(cls, name)
    except AttributeError:
        log.debug("retrace: %s has no method %s; skipped", cls.__name__, name)
        return False
    return True


#: Types a module makes but does not expose as an attribute
#: (configs/handlers/boundary.toml [hidden_types]).
_HIDDEN_TYPES = _boundary.HIDDEN_TYPES


def _resolve_type(module, module_name: str, type_name: str):
    value = module.__dict__.get(type_name)
    if _is_type(value):
        return value
    maker = _HIDDEN_TYPES.get((module_name, type_name))
    if maker is not None:
        try:
            return maker()
        except Exception:  # pragma: no cover - platform without it
            return None
    return None


#: (module, function) -> factory(system, name) of a Python substitute that
#: realises the boundary the config names (configs/handlers/boundary.toml
#: [substitutes]).
_SUBSTITUTES = _boundary.SUBSTITUTES

#: Functions that, called after a replay ended (finalizers at interpreter
#: exit: multiprocessing's ``_ConnectionBase.__del__``), would act on
#: descriptor numbers that are recorded values, not this process's: they do
#: nothing then. On record the same late calls closed the real descriptors
#: the program owned, which a replay never opened. ([inert_after_replay])
_INERT_AFTER_REPLAY = _boundary.INERT_AFTER_REPLAY


def _inert_after_replay(system, fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if getattr(system, "replay_ended", False):
            return None
        return fn(*args, **kwargs)
    return call


def _is_builtin_type(cls) -> bool:
    return not (cls.__flags__ & (1 << 9))   # Py_TPFLAGS_HEAPTYPE


_ITERATOR_METHODS = frozenset({"__iter__", "__reversed__"})

#: (module, type, method) -> methods of the instances that external code
#: makes from a class argument and calls back (see _with_callbacks;
#: configs/handlers/boundary.toml [instance_callbacks]).
_INSTANCE_CALLBACKS = _boundary.INSTANCE_CALLBACKS


def _callable_name(fn):
    return f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', None) or type(fn).__name__}"


class _CallbackInstance:
    """What external code gets instead of an instance of a callback class:
    the named methods are callbacks (made while the program runs the
    constructor callback, so at the same point on replay)."""

    def __init__(self, system, instance, methods):
        self._instance = instance
        for m in methods:
            real = getattr(instance, m, None)
            if real is not None:
                setattr(self, m, system.callback(real, f"{_callable_name(type(instance))}.{m}"))

    def __getattr__(self, attr):
        return getattr(self._instance, attr)


def _instance_callback_factory(system, cls, methods):
    def make(*args, **kwargs):
        return _CallbackInstance(system, cls(*args, **kwargs), methods)
    make.__name__ = getattr(cls, "__name__", "make")
    make.__qualname__ = getattr(cls, "__qualname__", make.__name__)
    make.__module__ = getattr(cls, "__module__", None)
    return make


def _named(fn, cls, attr):
    fn.__name__ = attr
    fn.__qualname__ = f"{cls.__name__}.{attr}"
    fn.__module__ = cls.__module__
    return fn


#: The real ``__dict__`` of a module object, read without running code of
#: the module's class (a lazy module's ``__getattr__``/``__getattribute__``).
_module_dict_of = _types.ModuleType.__dict__["__dict__"].__get__


def _module_dict(module):
    """The namespace of a ``sys.modules`` entry, or None if it is not a
    module. Scans look at values only through ``type(value)`` and
    ``__dict__`` lookups: an ``isinstance`` or ``getattr`` on a lazy object
    (Celery's ``current_app`` proxy, Django's ``settings``) runs its code,
    which may import half the program or fail mid-import."""
    if not issubclass(type(module), _types.ModuleType):
        return None
    try:
        d = _module_dict_of(module)
    except Exception:  # pragma: no cover - a module without a namespace
        return None
    return d if type(d) is dict else None


def _is_type(value) -> bool:
    """``isinstance(value, type)`` without consulting ``value.__class__``."""
    return issubclass(type(value), type)


#: Functions that find and read program source (see _disable_source_readers).
_SOURCE_READERS = {
    "inspect": ("getmodule", "getsourcefile", "getabsfile", "findsource", "getfile",
                "getsourcelines", "getsource", "getframeinfo", "getinnerframes",
                "getouterframes", "trace"),   # not stack(): it counts its caller's frames
    "linecache": ("getline", "getlines", "updatecache", "checkcache", "lazycache"),
}


class NativeIOUnsupported(RetraceError):
    """A library did I/O in C that no boundary records (NATIVE_IO)."""
    exit_code = 4


#: Libraries whose C code reads and writes descriptors itself: module ->
#: (distribution, what it does, its I/O entry points in that module)
#: (configs/handlers/boundary.toml [native_io]).
#: Covered elsewhere and so absent here: the stdlib's ssl (configs/ssl.toml),
#: sqlite3 (a file, configs/sqlite3.toml). docs/COMPATIBILITY.md lists both.
NATIVE_IO = _boundary.NATIVE_IO


#: C extensions that patch builtins by writing into their C method tables:
#: module -> the modules/types whose attributes it takes when it is
#: imported. time-machine keeps ``time.time``, ``datetime.datetime.now``…
#: from its module init and later writes their ``ml_meth``: finding our
#: gateways there (not builtin functions) crashed the process. The import
#: runs with the original builtins back in place, so it patches the real
#: ones — which our gateways call: the travelled time is what the recording
#: holds, and what the replay returns.
_C_LEVEL_PATCHERS = {
    "_time_machine": ("time", "datetime.datetime", "datetime.date"),
}


def _is_own(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _OWN_PREFIXES)


class Installer:
    """Apply ``config`` to this interpreter through ``system``."""

    #: reuse the reference index across installs (set by pytest --retrace's
    #: TestRunner; see _reference_index)
    reuse_index = False
    _index_cache = None

    _active: "Installer | None" = None

    def __init__(self, system, config):
        self.system = system
        self.config = config
        self._undo: list = []
        self._originals: dict = {}   # (id(owner), attr) -> (owner, attr, original), see _set
        self._pending = {}
        self._on_import: dict = {}   # module name -> fn(module), see when_imported
        self._applied: dict = {}     # module name -> [fn] run on it already (see forget_modules)
        self._patched_modules: set[str] = set()
        self._installed = False
        self._import_state = threading.local()
        self._import_replacements: dict = {}
        self._index = None          # see _reference_index
        self._index_shared = None   # the cache's index whose lists _index shares
        self._index_size = -1
        self._scanned: dict = {}    # module name -> (module, its globals or None, their len) when indexed
        self._index_full = False    # True: _UNINDEXED values indexed too

    # ------------------------------------------------------------ lifecycle
    def install(self) -> None:
        if Installer._active is not None:
            raise RecordingError(
                "retrace is already installed in this process — call uninstall() first")
        Installer._active = self
        self._installed = True
        try:
            self._install_import_hook()
            replacements = {}
            self._pending = dict(self.config.modules)
            for name in list(self._pending):
                if name in sys.modules:
                    replacements.update(self._patch_module(name))
            # Substitutes: Python implementations whose external effects go
            # through recorded primitives (see files.py, fs.py).
            replacements.update(self._import_replacements)
            replacements[id(_io.open)] = (_io.open, like_builtin(files.open, _io.open))
            scandir = fs.make_scandir(self.system.patch_function(fs.listing, "posix.scandir"))
            replacements[id(_real_scandir)] = (_real_scandir, like_builtin(scandir, _real_scandir))
            self._replace_everywhere(replacements)
            self._rebind_bound_methods()
            files.finalizer_mode = self.system.mode
            for module_name in _SOURCE_READERS:
                self.when_imported(module_name, self._disable_source_readers)
            for module_name in NATIVE_IO:
                self.when_imported(module_name, self._guard_native_io)
            self.when_imported("_signal", self._patch_getsignal)
            self.when_imported("socket", self._patch_socket_finalizer)
            self._gc_callbacks_outside()
            self._hook_warnings()
        except BaseException:
            self.uninstall()
            raise

    def _hook_warnings(self) -> None:
        """Warnings a boundary call's real function shows are recorded and
        shown again on replay (System.warnings_hook, docs/EVENTS.md)."""
        make = getattr(self.system, "warnings_hook", None)
        if make is None:
            return
        import warnings
        original = warnings._showwarnmsg
        hook = make(original)
        warnings._showwarnmsg = hook

        def undo():
            if warnings._showwarnmsg is hook:
                warnings._showwarnmsg = original
        self._undo.append(undo)

    def uninstall(self) -> None:
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception:  # pragma: no cover - best effort restore
                log.exception("retrace: undo failed")
        unpatch = getattr(self.system, "unpatch_all", None)
        if unpatch is not None:
            unpatch()
        self._installed = False
        if Installer._active is self:
            Installer._active = None

    # ------------------------------------------------------------- modules
    def _patch_module(self, name: str) -> dict:
        """Patch one loaded module; return {id(original): (original, replacement)}."""
        cfg = self._pending.pop(name, None)
        if cfg is None or name in self._patched_modules:
            return {}
        self._patched_modules.add(name)
        module = sys.modules[name]
        system = self.system
        replaced = {}

        def swap(attr, new):
            old = module.__dict__[attr]
            new = substitute_for(old, new)
            self._set(module, attr, new)
            replaced[id(old)] = (old, new)

        for tname, tcfg in cfg.types.items():
            cls = _resolve_type(module, name, tname)
            if cls is None:
                log.debug("retrace: type %s.%s not in this Python; skipped", name, tname)
                continue
            qualified = f"{name}.{tname}"
            methods = [m for m in tcfg.methods if _has_attr(cls, m)]
            classmethods = [m for m in methods if _is_classmethod(cls, m)]
            methods = [m for m in methods if m not in classmethods]
            # Methods that fill a caller's buffer go through their
            # bytes-returning sibling (buffers.py), which must be patched.
            adapters = {m: a for m, a in buffers.METHOD_ADAPTERS.get((name, tname), {}).items()
                        if m in methods}
            for m, (sibling, _) in adapters.items():
                if sibling not in methods and _has_attr(cls, sibling):
                    methods.append(sibling)
            methods = [m for m in methods if m not in adapters or adapters[m][0] == m]
            # An iterator cannot cross the boundary: __iter__ is recorded as
            # the list of what it yields (os.environ's keys).
            iterators = [m for m in methods if m in _ITERATOR_METHODS]
            methods = [m for m in methods if m not in iterators]
            if methods or tcfg.construct or iterators:
                # Only then are the type's instances external objects (bound by
                # identity); a type patched for its classmethods alone (datetime)
                # keeps passing its instances by value.
                system.patch_type(cls, methods=methods, constructor=tcfg.construct, name=qualified)
            for m, (sibling, make_adapter) in adapters.items():
                patched_sibling = cls.__dict__.get(sibling)
                if patched_sibling is not None:
                    self._set(cls, m, _named(make_adapter(patched_sibling), cls, m), is_type=True)
            for m in iterators:
                self._patch_iterator(cls, m, f"{qualified}.{m}")
            for m in classmethods:
                self._patch_classmethod(cls, m, f"{qualified}.{m}")
            for getter in tcfg.getters:
                self._patch_getter(cls, getter, f"{qualified}.{getter}")
            type_callbacks = getattr(tcfg, "callback", None) or {}
            for mname, positions in type_callbacks.items():
                method = cls.__dict__.get(mname)
                if method is not None:
                    # Positions do not count self (docs/CONFIGS.md).
                    self._set(cls, mname, self._with_callbacks(
                        method, positions, offset=1,
                        instance_methods=_INSTANCE_CALLBACKS.get((name, tname, mname))),
                        is_type=True)
        callbacks = dict(getattr(cfg, "callback", {}) or {})
        for fname in cfg.proxy:
            fn = getattr(module, fname, None)
            if fn is None:
                log.debug("retrace: %s.%s not in this Python; skipped", name, fname)
                continue
            adapter = buffers.FUNCTION_ADAPTERS.get((name, fname))
            sibling = getattr(module, adapter[0], None) if adapter is not None else None
            substitute = _SUBSTITUTES.get((name, fname))
            if substitute is not None:
                wrapped = substitute(system, f"{name}.{fname}")
            elif sibling is not None:
                # Fills the caller's buffers: through the bytes-returning
                # sibling (buffers.py), so replay fills them too.
                wrapped = adapter[1](system.patch_function(sibling, f"{name}.{adapter[0]}"))
                wrapped.__name__ = wrapped.__qualname__ = fname
                wrapped.__module__ = getattr(fn, "__module__", name)
            else:
                if system.mode == "replay" and (name, fname) in _INERT_AFTER_REPLAY:
                    fn = _inert_after_replay(system, fn)
                wrapped = system.patch_function(fn, f"{name}.{fname}")
            if fname in callbacks:
                wrapped = self._with_callbacks(wrapped, callbacks.pop(fname))
            swap(fname, wrapped)
        for fname, positions in callbacks.items():
            fn = getattr(module, fname, None)
            if fn is not None:
                swap(fname, self._with_callbacks(fn, positions))
        for fname in cfg.disable:
            fn = getattr(module, fname, None)
            if fn is not None:
                swap(fname, system.disable_for(fn))
        for attr in cfg.bind:
            obj = getattr(module, attr, None)
            if obj is not None:
                system.bind(obj)
        for dotted in cfg.immutable:
            obj = module
            for part in dotted.split("."):
                obj = getattr(obj, part, None)
            if isinstance(obj, type):
                system.pass_by_value(obj)
            else:
                log.debug("retrace: immutable %s.%s not in this Python; skipped", name, dotted)
        return replaced

    def _patch_iterator(self, cls, attr, name):
        """``__iter__`` of bound instances: one boundary call returning the
        items as a list, iterated in program code."""
        real = cls.__dict__.get(attr) or getattr(cls, attr)

        def items(obj):
            return list(real(obj))
        items.__name__ = attr
        gateway = self.system.patch_function(items, name)
        is_bound = self.system.is_bound

        def iterate(obj):
            if is_bound(obj):
                return iter(gateway(obj))
            return real(obj)
        self._set(cls, attr, _named(iterate, cls, attr), is_type=True)

    def _patch_classmethod(self, cls, attr, name):
        """A classmethod (``datetime.now``) is a boundary call whatever the instance.

        The gateway calls the real method with the class first and no frame
        of ours in between: a C ``classmethod_descriptor`` is callable so,
        a Python classmethod through its function. A warning the method
        issues (``datetime.utcnow`` on 3.12+) is then attributed to the
        program's line, as in a plain run (docs/EVENTS.md WARNING)."""
        descriptor = cls.__dict__[attr]
        if isinstance(descriptor, classmethod):
            target = descriptor.__func__
        else:
            target = descriptor
        if not callable(target):
            def target(klass, *args, **kwargs):
                return descriptor.__get__(None, klass)(*args, **kwargs)
            target.__name__ = attr
            target.__qualname__ = f"{cls.__name__}.{attr}"
        self._set(cls, attr, classmethod(self.system.patch_function(target, name)), is_type=True)

    def _patch_getter(self, cls, attr, name):
        """Record reads of a data descriptor (property, getset, member) on bound instances."""
        for klass in cls.__mro__:
            if attr in klass.__dict__:
                descriptor = klass.__dict__[attr]
                break
        else:
            log.debug("retrace: %s has no attribute %s; skipped", cls.__name__, attr)
            return
        system = self.system

        def read(obj):
            return descriptor.__get__(obj, type(obj))
        read.__name__ = attr
        gateway = system.patch_function(read, name)
        is_bound = system.is_bound

        def fget(obj):
            if is_bound(obj):
                return gateway(obj)
            return descriptor.__get__(obj, type(obj))

        # Setting (and deleting) the attribute of a bound instance is a
        # boundary call like a method: on replay the real object behind it
        # was never initialised (sqlite3's ``conn.isolation_level = None``
        # raised "Base Connection.__init__ not called").
        fset = fdel = None
        if hasattr(descriptor, "__set__"):
            def write(obj, value):
                descriptor.__set__(obj, value)
            write.__name__ = attr
            set_gateway = system.patch_function(write, f"{name}.__set__")

            def fset(obj, value):
                if is_bound(obj):
                    set_gateway(obj, value)
                else:
                    descriptor.__set__(obj, value)
        if hasattr(descriptor, "__delete__"):
            def delete(obj):
                descriptor.__delete__(obj)
            delete.__name__ = attr
            delete_gateway = system.patch_function(delete, f"{name}.__delete__")

            def fdel(obj):
                if is_bound(obj):
                    delete_gateway(obj)
                else:
                    descriptor.__delete__(obj)
        self._set(cls, attr, property(fget, fset, fdel, getattr(descriptor, "__doc__", None)),
                  is_type=True)

    def _with_callbacks(self, fn, positions, offset=0, instance_methods=None):
        """Wrap ``fn`` so the callable arguments at ``positions`` (+ *offset*
        for methods, whose positions do not count self) become callbacks.

        With *instance_methods* the argument is a class that external code
        instantiates and then drives through those methods (a sqlite3
        aggregate's ``step``/``finalize``): making an instance is a callback,
        and so is every call of those methods on it."""
        system = self.system
        if instance_methods:
            def make_callback(cls):
                return system.callback(_instance_callback_factory(system, cls, instance_methods),
                                       _callable_name(cls))
        else:
            make_callback = system.callback
        indexes = [p + offset for p in positions if isinstance(p, int)]
        names = [p for p in positions if isinstance(p, str)]

        def with_callbacks(*args, **kwargs):
            if indexes:
                args = list(args)
                for i in indexes:
                    if i < len(args) and callable(args[i]):
                        args[i] = make_callback(args[i])
            for n in names:
                if callable(kwargs.get(n)):
                    kwargs[n] = make_callback(kwargs[n])
            result = fn(*args, **kwargs)
            # A callback handed back (signal.signal's previous handler) is
            # the program's own function again.
            return result.fn if type(result) is _Callback else result

        with_callbacks.__wrapped__ = fn
        with_callbacks.__name__ = getattr(fn, "__name__", "with_callbacks")
        with_callbacks.__qualname__ = getattr(fn, "__qualname__", with_callbacks.__name__)
        return with_callbacks

    def _disable_source_readers(self, module) -> None:
        """Finding and reading the program's own source is code, not data
        (like the import system's finders, run DISABLED): ``inspect.stack()``
        and ``getmodule`` ``stat`` every module file in ``sys.modules``
        order, which our runtime's own imports change on replay; linecache
        fills its cache whenever a traceback is formatted, our runtime's
        included. Live on replay; the recording's source digests say the
        files are the recorded ones."""
        replacements = {}
        for fname in _SOURCE_READERS.get(module.__name__, ()):
            fn = module.__dict__.get(fname)
            if type(fn) is not _FunctionType:
                continue
            disabled = self._disabled(fn)
            self._set(module, fname, disabled)
            replacements[id(fn)] = (fn, disabled)
        self._replace_everywhere(replacements)

    def _guard_native_io(self, module) -> None:
        """Libraries whose C code does I/O on descriptors it got from Python
        (NATIVE_IO): no boundary sees those bytes, and on replay the
        descriptor is not live (pyOpenSSL: EBADF, then a deadlock report).
        Their I/O entry points say so in one line: at record a warning that
        the recording will not replay; on replay an error (exit 4) instead
        of a divergence deep inside the library."""
        library, what, entry_points = NATIVE_IO[module.__name__]
        replaying = self.system.mode == "replay"
        gate = self.system.gate
        warned = []
        for dotted in entry_points:
            owner_path, _, attr = dotted.rpartition(".")
            owner = module
            for part in filter(None, owner_path.split(".")):
                owner = owner.__dict__.get(part) if hasattr(owner, "__dict__") else None
            real = owner.__dict__.get(attr) if owner is not None else None
            if real is None:
                continue
            where = f"{module.__name__}.{dotted}"

            def guarded(*args, __real=real, __where=where, **kwargs):
                if gate.phase == INTERNAL:
                    message = (f"{library} does its own I/O in C ({what}; {__where} called) — "
                               f"this recording will not replay; see docs/COMPATIBILITY.md")
                    if library == "gevent":
                        message = (f"gevent is not supported ({what}; {__where} called) — "
                                   f"this recording will not replay; see docs/COMPATIBILITY.md")
                    # Our lines are not program output (outside the recording).
                    previous = gate.swap(DISABLED)
                    try:
                        if replaying:
                            # One line and exit 4 (an unsupported recording),
                            # not an exception the program could catch.
                            try:
                                sys.stdout.flush()
                            finally:
                                report.write(f"retrace: error: {message}\n")
                                _real_exit(NativeIOUnsupported.exit_code)
                        if not warned:
                            warned.append(True)
                            report.write(f"retrace: warning: {message}\n")
                    finally:
                        gate.phase = previous
                return __real(*args, **kwargs)
            guarded.__name__ = getattr(real, "__name__", attr)
            guarded.__qualname__ = getattr(real, "__qualname__", attr)
            guarded.__wrapped__ = real
            if _is_type(owner):
                self._set(owner, attr, guarded, is_type=True)
            else:
                self._set(owner, attr, substitute_for(real, guarded))

    def _with_originals(self, fn, owner_names):
        """*fn* run DISABLED with the original builtins back in the named
        modules and types (see _C_LEVEL_PATCHERS)."""
        from retracesoftware.utils import patch_type, unpatch_type
        gate = self.system.gate
        originals = self._originals

        def owners_match(owner):
            if issubclass(type(owner), _types.ModuleType):
                return owner.__name__ in owner_names
            return _is_type(owner) and f"{owner.__module__}.{owner.__qualname__}" in owner_names

        def call(*args, **kwargs):
            previous = gate.swap(DISABLED)
            restore = []
            try:
                for owner, attr, original in list(originals.values()):
                    if not owners_match(owner) or owner.__dict__.get(attr) is original:
                        continue
                    if _is_type(owner):
                        restore.append((None, patch_type(owner, {attr: original})))
                    else:
                        restore.append((owner, (attr, owner.__dict__[attr])))
                        setattr(owner, attr, original)
                return fn(*args, **kwargs)
            finally:
                for owner, what in reversed(restore):
                    if owner is None:
                        unpatch_type(what)
                    else:
                        setattr(owner, what[0], what[1])
                gate.phase = previous
        call.__name__ = getattr(fn, "__name__", "call")
        return call

    def _patch_getsignal(self, module) -> None:
        """``getsignal`` answers with the program's own function: the one
        patch of it is install/signals.py's `patch_getsignal`."""
        from retracesoftware.install.signals import patch_getsignal
        patch_getsignal(self, module)

    def _gc_callbacks_outside(self) -> None:
        """``gc.callbacks`` run when a collection happens, which is not at
        the same point on record and replay (our runtime allocates too): a
        callback making a boundary call (hypothesis times collections with
        ``time.perf_counter``) would put events on the tape that the replay
        makes elsewhere. The program's callbacks run inside one callback of
        ours, outside the recording (DISABLED), unless the collection is at
        a recorded point (install/gc_points.py `ProgramCallbacks`)."""
        from retracesoftware.install.gc_points import program_callbacks
        program_callbacks(self, self.system.gate)

    def _patch_socket_finalizer(self, module) -> None:
        """An unclosed socket's finalizer formats its ResourceWarning with
        ``repr(sock)``, which calls ``sock.fileno()`` (even when the warning
        is filtered out): a boundary call made whenever the garbage gets
        collected, which on replay (a stub, no finalizer) never happens. The
        finalizer runs outside the recording; a replayed stub has no real
        descriptor, so it warns of nothing."""
        cls = module.__dict__.get("socket")
        base = getattr(module, "_socket", None)
        base_type = getattr(base, "socket", None) if base is not None else None
        finalize = getattr(base_type, "__del__", None) if base_type is not None else None
        if cls is None or finalize is None or "__del__" in cls.__dict__:
            return
        gate = self.system.gate
        # A local, not the module global: at interpreter shutdown a socket
        # can be finalized after this module's globals were cleared (None).
        disabled = DISABLED

        def __del__(sock):
            previous = gate.swap(disabled)
            try:
                finalize(sock)
            finally:
                gate.phase = previous
        __del__.__qualname__ = "socket.__del__"
        self._set(cls, "__del__", __del__)

    def when_imported(self, name: str, fn) -> None:
        """Run ``fn(module)`` once module *name* is loaded: now if it already
        is, else right after its import finishes (code patches that are not
        config, e.g. install/thread_support.py's)."""
        module = sys.modules.get(name)
        if module is not None:
            self._applied.setdefault(name, []).append(fn)
            fn(module)
        elif name in self._on_import:     # both run, in the order asked
            first = self._on_import[name]
            self._on_import[name] = lambda module: (first(module), fn(module))
        else:
            self._on_import[name] = fn

    def forget_modules(self, names) -> None:
        """Modules taken out of ``sys.modules`` (the replay's start takes out
        what only the replay imported, see session_base): an import of one
        again makes a new module, which is patched as a first import is —
        its config and its `when_imported` callbacks — or it would run live."""
        for name in names:
            if name in self._patched_modules and name in self.config.modules:
                self._patched_modules.discard(name)
                self._pending[name] = self.config.modules[name]
            for fn in self._applied.pop(name, ()):
                self.when_imported(name, fn)

    def patch(self, owner, attr, value, is_type=False):
        """Set ``owner.attr = value`` until `uninstall()`, which restores the
        original (or removes the attribute if there was none). ``is_type``:
        *owner* is a type whose dict may be read-only (a built-in type): the
        attribute is set through ``utils.patch_type``. This, `replace_everywhere`
        and `uninstall` are the patch/undo API the other install modules use."""
        d = owner.__dict__
        missing = attr not in d
        old = d.get(attr)
        if not missing:
            self._originals.setdefault((id(owner), attr), (owner, attr, old))
        if is_type:
            from retracesoftware.utils import patch_type, unpatch_type
            token = patch_type(owner, {attr: value})
            self.on_uninstall(lambda: unpatch_type(token))
            return
        setattr(owner, attr, value)

        def undo():
            if missing:
                # (a class's __dict__ is a read-only mappingproxy: delattr)
                if attr in owner.__dict__:
                    delattr(owner, attr)
            else:
                setattr(owner, attr, old)
        self.on_uninstall(undo)

    _set = patch   # the name used before `patch` was public

    def on_uninstall(self, undo) -> None:
        """Run ``undo()`` at `uninstall()`, newest first. With a System that
        has ``on_unpatch`` the step goes on the System's stack: one undo stack
        for everything patched (System.patch_type and the installer's
        adapters on the same type undo in the reverse order they were made)."""
        on_unpatch = getattr(self.system, "on_unpatch", None)
        if on_unpatch is not None:
            on_unpatch(undo)
        else:
            self._undo.append(undo)

    def _rebind_bound_methods(self) -> None:
        """Refresh method objects bound before install to now-external objects.

        ``random.random`` is ``random._inst.random`` fetched at import: a
        method object that calls the C method directly, past the patched type.
        Fetching it again goes through the patched type.
        """
        is_bound = self.system.is_bound
        for mname, module in list(sys.modules.items()):
            if module is None or _is_own(mname):
                continue
            d = _module_dict(module)
            if d is None:
                continue
            for key, value in list(d.items()):
                if type(value) not in _METHOD_TYPES:
                    continue
                owner = value.__self__
                if owner is None or _is_type(owner) or type(owner) is _types.ModuleType:
                    continue
                try:
                    bound_here = is_bound(owner)
                except TypeError:
                    continue
                if bound_here:
                    fresh = getattr(owner, value.__name__, None)
                    if fresh is not None and fresh != value:
                        self._set(module, key, fresh)

    def replace_everywhere(self, replacements: dict) -> None:
        """Replace copies of patched functions: in other modules' globals, in
        class attributes (``selectors.SelectSelector._select = select.select``),
        in static methods (3.13's ``glob._StringGlobber.scandir =
        staticmethod(os.scandir)``, what ``Path.glob`` lists directories
        with) and in default arguments (``tempfile``'s ``unlink=_os.unlink``).

        One reverse index ``id(value) -> places`` serves every call made while
        no module was imported, so patching N groups costs one scan, not N.
        """
        if not replacements:
            return
        index = self._reference_index()
        if any(type(old) in _UNINDEXED for old, _ in replacements.values()):
            # Never so far (patched values are functions and builtins): a
            # value of a type the index leaves out is found by a full scan.
            index = self._reference_index(full=True)
        for old, new in list(replacements.values()):
            places = index.pop(id(old), None)
            if not places:
                continue
            moved = []
            for kind, owner, key, value in places:
                if value is not old:
                    continue
                if kind == _IN_MODULE:
                    if owner.__dict__.get(key) is old:
                        self._set(owner, key, new)
                elif kind == _IN_CLASS:
                    if owner.__dict__.get(key) is old:
                        value_new = new
                        # A builtin does not bind as a method; its Python
                        # replacement is made a staticmethod so it does not either.
                        if not hasattr(type(old), "__get__") and hasattr(type(new), "__get__") \
                                and type(new) is not builtin_function:
                            value_new = staticmethod(new)
                        self._set(owner, key, value_new)
                elif kind == _IN_STATICMETHOD:
                    current = owner.__dict__.get(key)
                    if current is old or (type(current) is staticmethod and current.__func__ is old):
                        self._set(owner, key, new if isinstance(new, staticmethod) else staticmethod(new))
                elif kind == _IN_DEFAULTS:
                    self._replace_default(owner, key, old, new)
                elif kind == _IN_CELL:
                    self._replace_in_cell(owner, old, new)
                else:
                    self._replace_kwdefault(owner, key, old, new)
                moved.append((kind, owner, key, new))
            if moved:
                index[id(new)] = index.get(id(new), []) + moved   # never extends a cached list

    _replace_everywhere = replace_everywhere

    def _reference_index(self, full=False) -> dict:
        modules_now = len(sys.modules)
        if full:
            # Every value, _UNINDEXED types included: the index from now on.
            if self._index_full:
                if self._index_size == modules_now:
                    return self._index
            else:
                self._index = None
                self._scanned = {}
                self._index_full = True
        elif self._index is not None and self._index_size == modules_now:
            return self._index
        skip = frozenset() if self._index_full else _UNINDEXED
        # pytest --retrace installs twice per test: the scan (most of an
        # install's cost) is reused from the last install while the same
        # modules are loaded. Only an index made by an install's first
        # replacement is kept (no copy was moved yet, so every copy holds
        # the original); each install works on its own copy of it.
        first = self._index is None and Installer.reuse_index and not self._index_full
        loaded = (modules_now, sum(map(id, list(sys.modules.values()))))
        cached = Installer._index_cache
        if first and cached is not None and cached[0] == loaded:
            # The lists stay the cache's until one is appended to below
            # (copied then: `shared`); replacements never extend one. Copying
            # every list was a tenth of a trivial test's time (2 installs).
            self._index = dict(cached[1])
            self._index_shared = cached[1]
            self._scanned = dict(cached[2])
            self._index_size = modules_now
            return self._index
        # Modules were imported since the last scan (an install imports
        # some): scan only what is new — a module not seen yet, replaced in
        # sys.modules, or whose globals grew (an import binds its name in
        # the importer's globals). A full rescan per replacement group made
        # the index most of a recording's start-up.
        index: dict = self._index if self._index is not None else {}
        scanned = self._scanned
        shared = self._index_shared if self._index is not None else None
        if shared is None:
            shared = {}
        self._index_shared = None if not shared else shared

        for mname, module in list(sys.modules.items()):
            seen = scanned.get(mname)
            if seen is not None and seen[0] is module:
                # (module, its namespace or None: not scanned, its length then)
                if seen[1] is None or len(seen[1]) == seen[2]:
                    continue
                d = seen[1]
            else:
                d = None if module is None or _is_own(mname) else _module_dict(module)
                if d is None:
                    scanned[mname] = (module, None, 0)
                    continue
            scanned[mname] = (module, d, len(d))
            # Its globals, and the defaults, closure cells and class
            # attributes of what it defines (utils: C++, the bulk of a start).
            _index_namespace(index, shared, skip, module, mname, d)
        if first and len(sys.modules) == modules_now:
            Installer._index_cache = (loaded, {k: list(v) for k, v in index.items()}, dict(scanned))
        self._index = index
        self._index_size = len(sys.modules)
        return index

    def _replace_default(self, fn, position, old, new) -> None:
        defaults = fn.__defaults__
        if not defaults or position >= len(defaults) or defaults[position] is not old:
            return
        fn.__defaults__ = defaults[:position] + (new,) + defaults[position + 1:]
        self.on_uninstall(lambda: setattr(fn, "__defaults__", defaults))

    def _replace_in_cell(self, cell, old, new) -> None:
        try:
            if cell.cell_contents is not old:
                return
        except ValueError:
            return
        cell.cell_contents = new

        def restore():
            try:
                if cell.cell_contents is new:
                    cell.cell_contents = old
            except ValueError:
                pass
        self.on_uninstall(restore)

    def _replace_kwdefault(self, fn, name, old, new) -> None:
        kwdefaults = fn.__kwdefaults__
        if not kwdefaults or kwdefaults.get(name) is not old:
            return
        fn.__kwdefaults__ = {**kwdefaults, name: new}
        self.on_uninstall(lambda: setattr(fn, "__kwdefaults__", kwdefaults))

    # --------------------------------------------------------------- imports
    @property
    def import_state(self):
        """Per thread: ``outer``, the stack of the phases the imports in
        progress were started in (read by hooks that act only for imports the
        program made, e.g. sources.py)."""
        return self._import_state

    def _install_import_hook(self) -> None:
        bootstrap = _importlib_bootstrap
        gate = self.system.gate
        state = self._import_state
        original_find_and_load = bootstrap._find_and_load
        original_call = bootstrap._call_with_frames_removed
        installer = self

        namespace = {
            "gate": gate, "state": state, "installer": installer,
            "DISABLED": DISABLED, "INTERNAL": INTERNAL,
            "original_find_and_load": original_find_and_load,
            "original_call": original_call,
            "c_level_patchers": _C_LEVEL_PATCHERS, "sys": sys,
        }
        # Compiled under importlib's own file name, so CPython's
        # remove_importlib_frames() drops these frames from tracebacks of
        # failing imports exactly as it drops importlib's.
        _import_hook.bind(_import_hook.HOOK, namespace)
        _find_and_load = namespace["_find_and_load"]
        _call_with_frames_removed = namespace["_call_with_frames_removed"]

        self._set(bootstrap, "_find_and_load", _find_and_load)
        self._set(bootstrap, "_call_with_frames_removed", _call_with_frames_removed)
        # Finding a module and reading its code are the import system's own
        # business wherever they are called from (runpy, importlib.util,
        # pkgutil): always outside the recording.
        original_find_spec = bootstrap._find_spec
        disabled_find_spec = self._disabled(original_find_spec)
        # A loader that runs module bodies with its own exec() (pytest's
        # assertion rewriter, zipimport) would run them DISABLED, outside the
        # recording: a module-level random.Random() or clock read imported
        # from a test module replayed with other values (trio's scheduler
        # seed: tenacity's suite). Such a loader's module gets an `exec` that
        # runs a module body being imported in the importer's phase.
        namespace["find_spec"] = disabled_find_spec
        namespace["stdlib_loaders"] = {"importlib._bootstrap", "importlib._bootstrap_external",
                                       "_frozen_importlib", "_frozen_importlib_external"}
        namespace["injected"] = injected = {}
        self.on_uninstall(lambda: [vars(m).pop("exec", None) for m in injected.values()
                                   if vars(m).get("exec") is namespace["_call_with_frames_removed_exec"]])
        _import_hook.bind(_import_hook.LOADER_EXEC, namespace)
        disabled_find_spec = namespace["_find_spec"]
        disabled_find_spec.__wrapped__ = original_find_spec
        self._set(bootstrap, "_find_spec", disabled_find_spec)
        # importlib.util and friends hold their own copy of _find_spec.
        self._import_replacements = {id(original_find_spec): (original_find_spec, disabled_find_spec)}
        # The C import path (IMPORT_NAME of a module still initialising) calls
        # _lock_unlock_module directly, in the importer's phase: its module
        # lock owner must be the real thread ident, as when _find_and_load
        # (disabled) took the lock — else replay waits on itself forever.
        self._set(bootstrap, "_lock_unlock_module", self._disabled(bootstrap._lock_unlock_module))
        external = sys.modules["importlib._bootstrap_external"]
        for cls_name, method in (("SourceLoader", "get_code"), ("FileLoader", "get_data"),
                                 ("SourceFileLoader", "path_stats"),
                                 ("SourcelessFileLoader", "get_code")):
            cls = getattr(external, cls_name, None)
            if cls is not None and method in cls.__dict__:
                self._set(cls, method, self._disabled(cls.__dict__[method]))

    def _disabled(self, fn):
        """``fn`` run with the runtime off; a plain function, so it binds as a method."""
        gate = self.system.gate

        def run_disabled(*args, **kwargs):
            previous = gate.swap(DISABLED)
            try:
                return fn(*args, **kwargs)
            finally:
                gate.phase = previous
        run_disabled.__name__ = getattr(fn, "__name__", "run_disabled")
        run_disabled.__qualname__ = getattr(fn, "__qualname__", run_disabled.__name__)
        run_disabled.__wrapped__ = fn
        return run_disabled


