"""Pure-Python backend of retracesoftware.utils: ``fingerprint`` (see
README.md in this folder, "fingerprint encoding"; utils/_python.py exports
it).
"""
from __future__ import annotations

import struct as _struct
import zlib as _zlib

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


def _fp_bytes(data, out):
    """'B' u32(len) first 64 bytes, then (len > 64) u32(CRC-32 of the rest)."""
    n = len(data)
    out.append(b"B" + _pack_I(n & 0xFFFFFFFF) + bytes(data[:_FP_PREFIX]))
    if n > _FP_PREFIX:
        out.append(_pack_I(_zlib.crc32(data[_FP_PREFIX:])))


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
        _fp_bytes(x if type(x) is bytes else bytes.__getitem__(x, slice(None)), out)
    elif isinstance(x, bytearray):
        _fp_bytes(memoryview(x), out)
    elif isinstance(x, memoryview) and x.c_contiguous:
        _fp_bytes(x.cast("B"), out)
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
