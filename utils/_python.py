"""Pure-Python backend of retracesoftware.utils.

Same names and behaviour as the C++ ``_utils`` extension (see README.md in this
folder for the contract).  Slower, and patching static types needs ctypes
(documented at ``patch_type``).
"""
from __future__ import annotations

import struct as _struct
import threading as _threading
import types as _types
import zlib as _zlib

DISABLED = 0
INTERNAL = 1
EXTERNAL = 2

_PHASES = (DISABLED, INTERNAL, EXTERNAL)


def _check_phase(phase):
    if not isinstance(phase, int):
        raise TypeError(f"phase must be an int (DISABLED=0, INTERNAL=1, EXTERNAL=2), got {type(phase).__name__}")
    if phase not in _PHASES:
        raise ValueError(f"phase must be DISABLED=0, INTERNAL=1 or EXTERNAL=2, got {phase!r}")
    return int(phase)


# --------------------------------------------------------------------------- Gate


class _PhaseCell(_threading.local):
    # Class attribute: a thread that never set the phase reads DISABLED.
    phase = DISABLED


class _GateUsing:
    """Context manager returned by ``Gate.using(phase)``: sets, then restores."""

    __slots__ = ("_cell", "_phase", "_saved")

    def __init__(self, cell, phase):
        self._cell = cell
        self._phase = phase
        self._saved = None

    def __enter__(self):
        cell = self._cell
        self._saved = cell.phase
        cell.phase = self._phase
        return self

    def __exit__(self, *exc):
        self._cell.phase = self._saved
        return False


class Gate:
    """A thread-local phase cell (DISABLED / INTERNAL / EXTERNAL).

    ``gate.phase`` reads and writes the calling thread's phase in O(1); a
    thread that never set it reads DISABLED.
    """

    __slots__ = ("_cell", "__weakref__")

    def __init__(self):
        self._cell = _PhaseCell()

    @property
    def phase(self):
        return self._cell.phase

    @phase.setter
    def phase(self, value):
        self._cell.phase = _check_phase(value)

    def swap(self, phase):
        """Set this thread's phase; return the previous one."""
        phase = _check_phase(phase)
        cell = self._cell
        old = cell.phase
        cell.phase = phase
        return old

    def using(self, phase):
        """``with gate.using(INTERNAL): ...`` sets the phase, restores on exit."""
        return _GateUsing(self._cell, _check_phase(phase))

    def call(self, phase, fn, /, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` with the phase set; restore it afterwards
        (on return and on exception)."""
        phase = _check_phase(phase)
        cell = self._cell
        old = cell.phase
        cell.phase = phase
        try:
            return fn(*args, **kwargs)
        finally:
            cell.phase = old

    def __repr__(self):
        return f"<Gate phase={self._cell.phase}>"


# --------------------------------------------------------------------- gateways


class _Gateway:
    """Shared descriptor behaviour: bind like a function when fetched through
    an instance, so a gateway can sit in a type's ``__dict__``."""

    __slots__ = ()

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return _types.MethodType(self, obj)

    @property
    def __wrapped__(self):
        return self.target

    @property
    def __name__(self):
        return getattr(self.target, "__name__", type(self).__name__)



def _check_callable(name, value, optional):
    if value is None and optional:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable{' or None' if optional else ''}, got {type(value).__name__}")
    return value


class RecordGateway(_Gateway):
    """``RecordGateway(gate, target, before, after, error)``.

    Called while ``gate.phase == INTERNAL``: ``before(*a, **kw)`` (skipped if
    None), phase := EXTERNAL, ``r = target(*a, **kw)``, phase := INTERNAL, then
    ``after(r)`` is returned (None: ``r`` itself).  If target raises, the phase
    is restored, ``error(exc)`` is called (skipped if None) and the exception
    re-raised.  In any other phase: ``target(*a, **kw)`` straight through.
    """

    __slots__ = ("gate", "target", "before", "after", "error", "_cell")

    def __init__(self, gate, target, before=None, after=None, error=None):
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be a Gate, got {type(gate).__name__}")
        self.gate = gate
        self.target = _check_callable("target", target, False)
        self.before = _check_callable("before", before, True)
        self.after = _check_callable("after", after, True)
        self.error = _check_callable("error", error, True)
        self._cell = gate._cell

    def __call__(self, *args, **kwargs):
        cell = self._cell
        if cell.phase != INTERNAL:
            return self.target(*args, **kwargs)
        before = self.before
        if before is not None:
            before(*args, **kwargs)
        cell.phase = EXTERNAL
        try:
            result = self.target(*args, **kwargs)
        except BaseException as exc:
            cell.phase = INTERNAL
            error = self.error
            if error is not None:
                error(exc)
            raise
        cell.phase = INTERNAL
        after = self.after
        return result if after is None else after(result)

    def __repr__(self):
        return f"<RecordGateway for {self.target!r}>"


class ReplayGateway(_Gateway):
    """``ReplayGateway(gate, target, replay)``: ``replay(*a, **kw)`` while the
    phase is INTERNAL, else ``target(*a, **kw)``."""

    __slots__ = ("gate", "target", "replay", "_cell")

    def __init__(self, gate, target, replay):
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be a Gate, got {type(gate).__name__}")
        self.gate = gate
        self.target = _check_callable("target", target, False)
        self.replay = _check_callable("replay", replay, False)
        self._cell = gate._cell

    def __call__(self, *args, **kwargs):
        if self._cell.phase != INTERNAL:
            return self.target(*args, **kwargs)
        return self.replay(*args, **kwargs)

    def __repr__(self):
        return f"<ReplayGateway for {self.target!r}>"


# ------------------------------------------------------------------ fingerprint
#
# The byte encoding below is the contract shared with the C++ backend
# (utils/cpp/fingerprint.cpp); the fingerprint is its CRC-32 (zlib's).

_FP_PREFIX = 64      # str: code points hashed; bytes: bytes hashed
_FP_ITEMS = 16       # tuple/list: items hashed
_FP_DEPTH = 3        # nesting below which containers hash by type name only
_MASK64 = (1 << 64) - 1
_pack_q = _struct.Struct("<q").pack
_pack_d = _struct.Struct("<d").pack
_pack_I = _struct.Struct("<I").pack
_pack_QQB = _struct.Struct("<QQB").pack


def _fp_encode(x, depth, out):
    if x is None:
        out.append(b"N")
    elif x is True:
        out.append(b"T")
    elif x is False:
        out.append(b"F")
    elif isinstance(x, int):
        v = x if type(x) is int else int.__int__(x)
        if -(1 << 63) <= v < (1 << 63):
            out.append(b"I" + _pack_q(v))
        else:
            out.append(b"J" + _pack_QQB(v.bit_length(), v & _MASK64, v < 0))
    elif isinstance(x, float):
        out.append(b"D" + _pack_d(float.__float__(x)))
    elif isinstance(x, str):
        s = x if type(x) is str else str.__str__(x)
        out.append(b"S" + _pack_I(len(s) & 0xFFFFFFFF) + s[:_FP_PREFIX].encode("utf-32-le", "surrogatepass"))
    elif isinstance(x, bytes):
        n = bytes.__len__(x)
        out.append(b"B" + _pack_I(n & 0xFFFFFFFF) + bytes.__getitem__(x, slice(0, _FP_PREFIX)))
    elif isinstance(x, (tuple, list)) and depth < _FP_DEPTH:
        base = tuple if isinstance(x, tuple) else list
        n = base.__len__(x)
        out.append((b"U" if base is tuple else b"L") + _pack_I(n & 0xFFFFFFFF))
        for i in range(min(n, _FP_ITEMS)):
            _fp_encode(base.__getitem__(x, i), depth + 1, out)
    else:
        out.append(b"O" + type(x).__name__.encode("utf-8", "surrogatepass") + b"\0")


def fingerprint(*args, **kwargs):
    """Deterministic 32-bit hash of call arguments (see README: fingerprint)."""
    out = [b"A", _pack_I(len(args))]
    for a in args:
        _fp_encode(a, 0, out)
    if kwargs:
        out.append(b"K" + _pack_I(len(kwargs)))
        for k, v in kwargs.items():
            _fp_encode(k, 0, out)
            _fp_encode(v, 0, out)
    return _zlib.crc32(b"".join(out))
