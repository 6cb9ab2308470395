"""Argument summaries: a short, safe text of the arguments of the boundary
calls a user asks about (file paths and modes, environment variable names,
socket addresses, subprocess argv, SQL text), recorded as ``ARGS`` after the
call's ``CALL name fingerprint`` (docs/EVENTS.md).

Declared per function in the configs (``summarise = { open = [0, 1] }``:
argument positions, not counting ``self``, or keyword names; docs/CONFIGS.md).
Calls of functions without a summariser keep the native record path.

Only plain values are shown (str, bytes, int, float, bool, None, pathlib
paths, and tuples/lists of those, truncated); anything else is its type name:
no program ``__repr__``/``__fspath__`` runs. Environment variables are
summarised by name only (os.environ's values never appear in a summary).
"""
from __future__ import annotations

import reprlib

_PLAIN = (type(None), bool, int, float, str, bytes)
_MAX = 200

_repr = reprlib.Repr()
_repr.maxstring = 160
_repr.maxother = 60
_repr.maxlong = 40
_repr.maxlist = _repr.maxtuple = 12
_repr.maxlevel = 2


def _short(value) -> str:
    return _repr.repr(_safe(value, 0))


def _safe(value, depth):
    t = type(value)
    if t in _PLAIN:
        return value
    if (t is tuple or t is list) and depth < 2:
        return t(_safe(v, depth + 1) for v in value[:13])
    if t.__module__ == "pathlib":          # the stdlib's own __str__: no program code
        return str(value)
    return _Opaque(value)


class _Opaque:
    __slots__ = ("name",)

    def __init__(self, value):
        self.name = type(value).__name__

    def __repr__(self):
        return f"<{self.name}>"


def make_summariser(positions, offset: int = 0):
    """``summarise(*args, **kwargs) -> str`` showing the arguments at
    *positions* (ints count after *offset* leading arguments: 1 for a
    method's ``self``; strs are keyword names, also found by position)."""
    positions = tuple(positions)

    def summarise(*args, **kwargs):
        parts = []
        for p in positions:
            if type(p) is int:
                i = p + offset
                if i < len(args):
                    parts.append(_short(args[i]))
            elif p in kwargs:
                parts.append(f"{p}={_short(kwargs[p])}")
        text = ", ".join(parts)
        return text if len(text) <= _MAX else text[:_MAX - 1] + "…"
    return summarise


def summaries(config) -> dict:
    """Tape name -> summariser for every ``summarise`` entry of *config*
    (an install.config BoundaryConfig)."""
    out = {}
    for mname, module in config.modules.items():
        for fname, positions in (getattr(module, "summarise", None) or {}).items():
            out[f"{mname}.{fname}"] = make_summariser(positions)
        for tname, tcfg in (module.types or {}).items():
            for meth, positions in (getattr(tcfg, "summarise", None) or {}).items():
                out[f"{mname}.{tname}.{meth}"] = make_summariser(positions, offset=1)
    return out
