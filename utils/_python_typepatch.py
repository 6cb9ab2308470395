"""Pure-Python backend of retracesoftware.utils: ``patch_type`` /
``unpatch_type`` / ``PatchToken`` (see README.md in this folder,
"patch_type"; utils/_python.py exports them).
"""
from __future__ import annotations

import types as _types

from retracesoftware.utils import env as _env

# Pure Python cannot set attributes on immutable types (TypeError "cannot set
# ... attribute of immutable type"), so this backend uses ctypes (part of
# CPython) to clear Py_TPFLAGS_IMMUTABLETYPE around type.__setattr__, exactly
# as the C++ backend does.  PYVERSIONS: on 3.12+ "static builtin" types keep
# their dict in the interpreter state; we write that dict
# (PyType_GetDict) and call PyType_Modified, and refuse slot dunders there.

_IMMUTABLETYPE = 1 << 8
_STATIC_BUILTIN = 1 << 1
_ctypes_api = None


def _api():
    global _ctypes_api
    if _ctypes_api is None:
        import ctypes

        # Offset of tp_flags in PyTypeObject: PyVarObject head (3 words), then
        # tp_name, tp_basicsize, tp_itemsize, and 15 pointer-sized slots up to
        # tp_as_buffer (stable across 3.11-3.13, non-free-threaded builds).
        word = ctypes.sizeof(ctypes.c_void_p)
        offset = word * (3 + 3 + 15)
        get_dict = None
        if _env.PY312_PLUS:  # PYVERSIONS
            get_dict = ctypes.pythonapi.PyType_GetDict
            get_dict.restype = ctypes.py_object
            get_dict.argtypes = [ctypes.py_object]
        modified = ctypes.pythonapi.PyType_Modified
        modified.restype = None
        modified.argtypes = [ctypes.py_object]
        _ctypes_api = (ctypes, offset, get_dict, modified)
    return _ctypes_api


def _flags_cell(cls):
    ctypes, offset, _, _ = _api()
    return ctypes.c_ulong.from_address(id(cls) + offset)


def _type_dict(cls):
    _, _, get_dict, _ = _api()
    if get_dict is not None:
        return get_dict(cls)
    return _real_dict_of(cls)


def _real_dict_of(cls):
    # 3.11: the mappingproxy wraps the real tp_dict; gc.get_referents exposes it.
    import gc

    for ref in gc.get_referents(cls.__dict__):
        if type(ref) is dict:
            return ref
    raise RuntimeError(f"cannot reach the dict of {cls!r}")


def _is_dunder(name):
    return len(name) >= 5 and name[:2] == "__" and name[-2:] == "__"


_NOTHING = object()


def _set_type_attr(cls, name, value):
    flags = _flags_cell(cls)
    if _env.PY312_PLUS and flags.value & _STATIC_BUILTIN:  # PYVERSIONS
        if _is_dunder(name):
            raise TypeError(
                f"patch_type: cannot set {name!r} on static builtin type '{cls.__module__}.{cls.__qualname__}' "
                "on Python 3.12+: CPython offers no public way to update its C slots (patch a non-dunder "
                "method instead)"
            )
        d = _type_dict(cls)
        if value is _NOTHING:
            del d[name]
        else:
            d[name] = value
        _api()[3](cls)
        return
    saved = flags.value
    flags.value = saved & ~_IMMUTABLETYPE
    try:
        if value is _NOTHING:
            type.__delattr__(cls, name)
        else:
            type.__setattr__(cls, name, value)
    finally:
        flags.value = saved
    _api()[3](cls)


def _tp_new_cell(cls):
    """The tp_new slot of *cls* as a ctypes cell (word 39 of PyTypeObject)."""
    ctypes, offset, _, _ = _api()
    word = ctypes.sizeof(ctypes.c_void_p)
    # tp_base is word 32 (checked: a wrong layout must not write tp_new).
    if ctypes.c_void_p.from_address(id(cls) + word * 32).value != (id(cls.__base__) if cls.__base__ else None):
        raise RuntimeError("retracesoftware.utils: unexpected PyTypeObject layout")
    return ctypes.c_void_p.from_address(id(cls) + word * 39)


def _type_and_subclasses(cls):
    out = [cls]
    i = 0
    while i < len(out):
        for sub in type.__subclasses__(out[i]):
            if not any(o is sub for o in out):
                out.append(sub)
        i += 1
    return out


class PatchToken:
    """Returned by patch_type; pass to unpatch_type to restore."""

    __slots__ = ("cls", "_saved", "active", "_saved_new")

    def __init__(self, cls):
        self.cls = cls
        self._saved = []
        self.active = True
        # Setting then restoring `__new__` leaves CPython's slot_tp_new in
        # tp_new (see utils/cpp/typepatch.cpp): keep tp_new of the type and
        # its subclasses (weakly) and put them back on restore.
        self._saved_new = []

    def _snapshot_new(self):
        import weakref

        for t in _type_and_subclasses(self.cls):
            self._saved_new.append((weakref.ref(t), _tp_new_cell(t).value))

    def _restore_new(self, patched):
        done = []
        for ref, fn in self._saved_new:
            t = ref()
            if t is None:
                continue
            _tp_new_cell(t).value = fn
            _api()[3](t)
            done.append(t)
        for s in _type_and_subclasses(self.cls):
            if any(s is d for d in done):
                continue
            cell = _tp_new_cell(s)
            if cell.value != patched or s.__base__ is None or "__new__" in _type_dict(s):
                continue
            if type(s.__new__) is not _types.BuiltinFunctionType:
                continue
            cell.value = _tp_new_cell(s.__base__).value
            _api()[3](s)

    @property
    def names(self):
        return tuple(name for name, _ in self._saved)

    def _restore(self):
        patched = _tp_new_cell(self.cls).value if self._saved_new else None
        for name, old in reversed(self._saved):
            _set_type_attr(self.cls, name, old)
        if self._saved_new:
            self._restore_new(patched)

    def __repr__(self):
        return f"<PatchToken {self.cls.__module__}.{self.cls.__qualname__} {'active' if self.active else 'restored'}>"


def patch_type(cls, attrs):
    """Set attributes on any type (static/immutable too); returns a PatchToken."""
    if not isinstance(cls, type):
        raise TypeError(f"patch_type: cls must be a type, got {type(cls).__name__}")
    if not isinstance(attrs, dict):
        raise TypeError(f"patch_type: attrs must be a dict, got {type(attrs).__name__}")
    token = PatchToken(cls)
    if "__new__" in attrs and not (_env.PY312_PLUS and _flags_cell(cls).value & _STATIC_BUILTIN):  # PYVERSIONS
        token._snapshot_new()
    for name, value in list(attrs.items()):
        try:
            if not isinstance(name, str):
                raise TypeError(f"patch_type: attribute names must be str, got {type(name).__name__}")
            old = _type_dict(cls).get(name, _NOTHING)
            _set_type_attr(cls, name, value)
        except BaseException:
            try:
                token._restore()
            except Exception:
                pass
            raise
        token._saved.append((name, old))
    return token


def unpatch_type(token):
    """Restore exactly what patch_type changed (new attributes are deleted)."""
    if not isinstance(token, PatchToken):
        raise TypeError(f"unpatch_type: expected a PatchToken, got {type(token).__name__}")
    if not token.active:
        raise ValueError("unpatch_type: this token was already unpatched")
    token.active = False
    token._restore()
