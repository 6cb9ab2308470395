"""Pure-Python backend of retracesoftware.utils.

Same names and behaviour as the C++ ``_utils`` extension (see README.md in this
folder for the contract).  Slower, and patching static types needs ctypes
(documented at ``patch_type``).
"""
from __future__ import annotations

# The parts, one file each (this module re-exports them; the C++ files they
# mirror are in cpp/): phases and Gate; the gateways; fingerprint; patch_type.
# Identity hashing and stack capture are below.
from retracesoftware.utils._intercept import InterceptDict  # noqa: F401  (shared by both backends)
from retracesoftware.utils._python_fingerprint import fingerprint  # noqa: F401
from retracesoftware.utils._python_gate import DISABLED, EXTERNAL, INTERNAL, Gate  # noqa: F401
from retracesoftware.utils._python_gateways import (  # noqa: F401
    MethodGateway, NewGateway, RecordCallGateway, RecordGateway, ReplayCallGateway, ReplayGateway,
    ReplaySyncGateway, TurnState, flush_pending_calls, thread_ids_changed)
from retracesoftware.utils._python_typepatch import PatchToken, patch_type, unpatch_type  # noqa: F401

# -------------------------------------------------------------- identity hash
#
# The same side table and the same counter sequence as the C++ backend (see
# utils/cpp/identity_hash.cpp), so identity_hash() agrees across backends.
# Switching object.__hash__ itself (set_identity_hashing) needs to replace the
# tp_hash C slot of object and of every type inheriting it: impossible from
# pure Python on 3.12+ (object is a static builtin whose slots cannot be
# updated) and through a slow Python-level __hash__ on 3.11, so this backend
# refuses it with NotImplementedError on every version.

_hash_counter = 0
_hash_table = {}  # id(obj) -> (hash, weakref)
_MASK64 = (1 << 64) - 1


def _counter_hash(n):
    return ((n * 0x9E3779B97F4A7C15) & _MASK64) >> 2


def identity_hash(obj):
    """The counter-based hash of obj (assigned on first use; the address hash
    for objects that cannot be weakly referenced)."""
    global _hash_counter
    key = id(obj)
    entry = _hash_table.get(key)
    if entry is not None:
        return entry[0]
    import weakref

    try:
        ref = weakref.ref(obj, lambda r, key=key: _hash_table.pop(key, None))
    except TypeError:
        return object.__hash__(obj)
    _hash_counter += 1
    h = _counter_hash(_hash_counter)
    _hash_table[key] = (h, ref)
    return h


def set_identity_hashing(enabled, /, *, gate=None, thread_id=None):
    """Switch counter-based object.__hash__ on or off (C++ backend only)."""
    if enabled:
        raise NotImplementedError(
            "set_identity_hashing: replacing object.__hash__ for every type needs the C++ backend "
            "(retracesoftware.utils._utils); CPython offers no pure-Python way to update object's tp_hash slot"
        )


def identity_id(obj, /):
    """id(obj): deterministic ids need the C++ backend (set_identity_ids)."""
    return id(obj)


def set_identity_ids(enabled, /, *, keep_live=False):
    if enabled:
        raise NotImplementedError(
            "set_identity_ids: deterministic id() and default reprs need the C++ backend "
            "(retracesoftware.utils BACKEND == 'cpp')")


def identity_ids_enabled():
    return False


def identity_hashing_enabled():
    return False


# ----------------------------------------------------------------------- stack

import sys as _sys  # noqa: E402


def capture_stack(skip=0):
    """The caller's stack as ((filename, lineno, funcname), ...), outermost
    first; skip drops that many innermost frames."""
    if skip < 0:
        raise ValueError("capture_stack: skip must be >= 0")
    frame = _sys._getframe(1)
    entries = []
    index = 0
    while frame is not None:
        if index >= skip:
            code = frame.f_code
            entries.append((code.co_filename, frame.f_lineno, code.co_name))
        index += 1
        frame = frame.f_back
    entries.reverse()
    return tuple(entries)


class StackDelta:
    """Stack captures reported as a delta from the previous one."""

    __slots__ = ("previous",)

    def __init__(self):
        self.previous = ()

    def capture(self, skip=0):
        """(common, new_frames): frames shared (outermost) with the previous
        capture, and the frames after them."""
        if skip < 0:
            raise ValueError("capture_stack: skip must be >= 0")
        now = capture_stack(skip + 1)
        prev = self.previous
        common = 0
        limit = min(len(now), len(prev))
        while common < limit and now[common] == prev[common]:
            common += 1
        self.previous = now
        return common, now[common:]

    def reset(self):
        self.previous = ()


# ------------------------------------------------------------ reference index
#
# index_namespace: one module's part of the installer's reference index
# (install/installer.py, Installer._reference_index). Same walk and entries
# as cpp/reference_index.cpp.

_IN_MODULE, _IN_CLASS, _IN_DEFAULTS, _IN_KWDEFAULTS, _IN_CELL, _IN_STATICMETHOD = range(6)
_FunctionType = type(_counter_hash)
_BuiltinType = type(len)


def index_namespace(index, shared, skip, module, name, namespace):
    """Add to *index* (``id(value) -> [(kind, owner, key, value), ...]``)
    every value of *namespace* (the globals of *module*, called *name*)
    whose exact type is not in *skip*, and for the functions and classes
    *name* defines, their defaults, keyword defaults, builtins in closure
    cells and class attributes (a staticmethod's function too). A list that
    *shared* (a dict id -> list, or None) holds is copied before it grows.
    Kinds: 0 module global, 1 class attribute, 2 default, 3 keyword
    default, 4 closure cell, 5 a staticmethod's function."""
    if not isinstance(index, dict) or (shared is not None and not isinstance(shared, dict)) \
            or not isinstance(skip, (set, frozenset)) or not isinstance(namespace, dict):
        raise TypeError("index_namespace: index, shared and namespace must be dicts (shared may be None), skip a set")
    shared = shared or None

    def add(kind, owner, key, value):
        if type(value) in skip:
            return
        places = index.get(id(value))
        if places is None:
            index[id(value)] = [(kind, owner, key, value)]
        elif shared is not None and shared.get(id(value)) is places:
            index[id(value)] = places + [(kind, owner, key, value)]
        else:
            places.append((kind, owner, key, value))

    def add_defaults(fn):
        for i, v in enumerate(fn.__defaults__ or ()):
            add(_IN_DEFAULTS, fn, i, v)
        for key, v in (fn.__kwdefaults__ or {}).items():
            add(_IN_KWDEFAULTS, fn, key, v)
        add_cells(fn)

    def add_cells(fn):
        for cell in fn.__closure__ or ():
            try:
                v = cell.cell_contents
            except ValueError:      # empty cell
                continue
            if type(v) is _BuiltinType:
                add(_IN_CELL, cell, None, v)

    for key, value in list(namespace.items()):
        tv = type(value)
        if tv in skip:
            continue
        add(_IN_MODULE, module, key, value)
        if tv is _FunctionType:
            if getattr(value, "__module__", None) == name:
                if value.__defaults__ or value.__kwdefaults__ or value.__closure__:
                    add_defaults(value)
            elif value.__closure__ and getattr(value, "__wrapped__", None) is not None:
                add_cells(value)     # functools.wraps gave it the wrapped one's module
        elif issubclass(tv, type):
            if value.__module__ == name and value.__flags__ & (1 << 9):   # a heap type
                for ckey, cvalue in list(value.__dict__.items()):
                    if type(cvalue) is _FunctionType:
                        if cvalue.__defaults__ or cvalue.__kwdefaults__ or cvalue.__closure__:
                            add_defaults(cvalue)
                    else:
                        add(_IN_CLASS, value, ckey, cvalue)
                        if type(cvalue) is staticmethod:
                            add(_IN_STATICMETHOD, value, ckey, cvalue.__func__)
