"""Foreign calls through ``ctypes`` (docs/FIDELITY.md).

A function of a shared library called through ctypes (``CDLL(None).time``,
``libc.getrandom(buf, n, 0)``) runs C code no Python patch can see. Here the
function pointers a ``CDLL`` hands out (``lib.name``, ``lib["name"]``) are
made from a subclass of the library's ``_FuncPtr`` whose ``__call__`` is
the boundary:

* functions named in the config (``[modules."_ctypes_foreign.<lib>"] proxy
  = [...]``, ``<lib>`` the library's short name: ``c`` for libc, ``m`` for
  libm, ``ssl`` for ``libssl.so.3``; ``configs/ctypes.toml`` has the
  default libc set) are recorded calls ``ctypes.<lib>.<name>``: the result
  (simple values as Python values, a structure result as its bytes) and the
  bytes of every argument the function may write through (``byref(x)``,
  pointers, arrays, structures, ``create_string_buffer``); on replay the
  function is not called, the recorded bytes are copied back into those
  arguments and the recorded result returned;
* any other foreign call made by program code runs for real, and the first
  call of each function is put on the tape as
  ``ctypes.unrecorded:<lib>.<name>``, which ``inspect`` lists as
  "unrecorded foreign calls": where fidelity may end.

Not covered: function pointers made from prototypes (``CFUNCTYPE(...)(addr)``)
or fetched before recording began, ``ctypes.pythonapi`` (the interpreter
itself), errno (``use_errno``), and memory a function writes through a
pointer stored inside another structure.
"""
from __future__ import annotations

import os
import sys

from retracesoftware.utils import INTERNAL

#: config module names ``_ctypes_foreign.<lib>`` name the recorded functions
CONFIG_PREFIX = "_ctypes_foreign."
UNRECORDED_PREFIX = "ctypes.unrecorded:"


def library_key(name) -> str:
    """``c`` for ``None`` (the process: libc's symbols) and ``libc.so.6``;
    ``m`` for ``libm.so.6``; the file's stem otherwise."""
    if name is None:
        return "c"
    base = os.path.basename(str(name))
    if base.startswith("lib"):
        base = base[3:]
    for sep in (".so", ".dylib", ".dll"):
        i = base.find(sep)
        if i > 0:
            base = base[:i]
    return base or "?"


def install(session, installer):
    try:
        import ctypes
        import _ctypes
    except ImportError:     # pragma: no cover - Python without ctypes
        return
    system = session.system
    gate = system.gate
    replaying = system.mode == "replay"
    recorded = {}
    for mname, mcfg in session.config.modules.items():
        if mname.startswith(CONFIG_PREFIX):
            recorded[mname[len(CONFIG_PREFIX):]] = frozenset(mcfg.proxy)
    seen = set()
    gateways = {}
    subclasses = {}
    base_call = _ctypes.CFuncPtr.__call__
    addressof, sizeof, string_at, memmove = ctypes.addressof, ctypes.sizeof, ctypes.string_at, ctypes.memmove
    _CData = ctypes.c_int.__mro__[-2]        # _ctypes._CData
    _Pointer = ctypes._Pointer
    CArg = type(ctypes.byref(ctypes.c_int()))
    Structure, Union, Array = ctypes.Structure, ctypes.Union, ctypes.Array

    def written(arg):
        """The ctypes object the callee may write through *arg*, or None."""
        if type(arg) is CArg:
            arg = getattr(arg, "_obj", None)
        if isinstance(arg, _Pointer):
            try:
                return arg.contents if arg else None
            except ValueError:
                return None
        if isinstance(arg, (Structure, Union, Array)):
            return arg
        if isinstance(arg, _CData) and type(arg).__name__ == "c_char_Array":
            return arg
        return None

    def snapshot(args):
        outs = []
        for arg in args:
            obj = written(arg)
            outs.append(string_at(addressof(obj), sizeof(obj)) if obj is not None else None)
        return outs

    def restore(args, outs):
        for arg, data in zip(args, outs or ()):
            if data is None:
                continue
            obj = written(arg)
            if obj is not None and sizeof(obj) == len(data):
                memmove(addressof(obj), data, len(data))

    def gateway(lib, name):
        key = (lib, name)
        gw = gateways.get(key)
        if gw is None:
            def call(fp, *args):
                result = base_call(fp, *args)
                if isinstance(result, _CData):      # a structure result: its bytes
                    result = ("cdata", string_at(addressof(result), sizeof(result)))
                return (result, snapshot(args))
            call.__name__ = name
            gw = gateways[key] = system.patch_function(call, f"ctypes.{lib}.{name}")
        return gw

    def unrecorded(lib, name):
        def note(library, function):
            return None
        return system.patch_function(note, UNRECORDED_PREFIX + f"{lib}.{name}")

    def make_subclass(base, lib):
        names = recorded.get(lib, frozenset())

        def __call__(fp, *args):
            if gate.phase != INTERNAL:
                return base_call(fp, *args)
            name = getattr(fp, "__name__", None)
            if name in names:
                result, outs = gateway(lib, name)(fp, *args)
                if replaying:
                    restore(args, outs)
                if type(result) is tuple and len(result) == 2 and result[0] == "cdata":
                    restype = getattr(fp, "restype", None)
                    if isinstance(restype, type) and issubclass(restype, _CData):
                        return restype.from_buffer_copy(result[1])
                return result
            key = (lib, name)
            if key not in seen:
                seen.add(key)
                unrecorded(lib, name)(lib, str(name))
            return base_call(fp, *args)

        namespace = {"__call__": __call__, "__module__": base.__module__, "__qualname__": base.__qualname__,
                     "_flags_": base._flags_, "_restype_": base._restype_}
        if hasattr(base, "_argtypes_"):
            namespace["_argtypes_"] = base._argtypes_
        return type(base.__name__, (base,), namespace)

    cdll = ctypes.CDLL
    real_getitem = cdll.__getitem__
    pythonapi_flag = getattr(_ctypes, "FUNCFLAG_PYTHONAPI", 4)

    def __getitem__(self, name_or_ordinal):
        base = self._FuncPtr
        if gate.phase == 0 or getattr(self, "_func_flags_", 0) & pythonapi_flag or base is None:
            return real_getitem(self, name_or_ordinal)
        sub = subclasses.get(id(base))
        if sub is None or sub[0] is not base:
            sub = subclasses[id(base)] = (base, make_subclass(base, library_key(self._name)))
        func = sub[1]((name_or_ordinal, self))
        if not isinstance(name_or_ordinal, int):
            func.__name__ = name_or_ordinal
        return func
    __getitem__.__qualname__ = "CDLL.__getitem__"
    installer.patch(cdll, "__getitem__", __getitem__)


def install_when_imported(session, installer):
    """ctypes is patched when (if) the program imports it."""
    if "ctypes" in sys.modules:
        install(session, installer)
    else:
        installer.when_imported("ctypes", lambda module: install(session, installer))
