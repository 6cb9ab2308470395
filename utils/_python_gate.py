"""Pure-Python backend of retracesoftware.utils: the phases and ``Gate``, a
thread-local phase cell (see README.md in this folder; utils/_python.py
exports them).
"""
from __future__ import annotations

import threading as _threading

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
