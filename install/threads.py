"""Logical thread ids and thread start-up under retrace (DESIGN §4).

The parent assigns each new thread the next logical id *when it starts it*
(in program order, so the numbering is the same on record and replay,
whatever the OS does), and the child runs in the parent's phase.
"""
from __future__ import annotations

import _thread
import threading

from retracesoftware.utils import INTERNAL

_get_ident = _thread.get_ident
_allocate_lock = _thread.allocate_lock


class ThreadRegistry:
    """Maps OS thread idents to logical ids (main thread = 0)."""

    def __init__(self) -> None:
        self._ids: dict[int, int] = {_get_ident(): 0}
        self._next = 1
        self._lock = _allocate_lock()
        self.on_start = None  # optional callable(logical_id) run in the new thread

    def current(self) -> int:
        """Logical id of the calling thread; threads we did not start get -1."""
        return self._ids.get(_get_ident(), -1)

    def allocate(self) -> int:
        with self._lock:
            tid = self._next
            self._next += 1
            return tid

    def adopt(self, tid: int) -> None:
        self._ids[_get_ident()] = tid

    def forget(self) -> None:
        self._ids.pop(_get_ident(), None)

    def reset_after_fork(self) -> None:
        """In a forked child only the forking thread survives; it becomes 0."""
        self._ids = {_get_ident(): 0}
        self._next = 1
        self._lock = _allocate_lock()


def wrap_thread_start(system, registry: ThreadRegistry, start):
    """Wrap ``_thread.start_new_thread``-like ``start(func, args, kwargs=None, ...)``."""
    gate = system.gate
    thread_started = getattr(system, "thread_started", None)
    thread_exited = getattr(system, "thread_exited", None)

    # start_new_thread(function, args[, kwargs]) and 3.13's
    # start_joinable_thread(function, handle=None, daemon=True) both take the
    # function first and call it in the new thread with what follows.
    def start_thread(function, *rest, **kw):
        phase = gate.phase
        if phase != INTERNAL:
            return start(function, *rest, **kw)
        tid = registry.allocate()

        def run_as_logical_thread(*a, **k):
            registry.adopt(tid)
            if thread_started is not None:
                thread_started(tid)
            gate.phase = phase
            try:
                return function(*a, **k)
            finally:
                gate.phase = 0
                if thread_exited is not None:
                    thread_exited(tid)
                registry.forget()

        return start(run_as_logical_thread, *rest, **kw)

    start_thread.__name__ = getattr(start, "__name__", "start_new_thread")
    start_thread.__wrapped__ = start
    return start_thread


def thread_start_functions():
    """The (module, attribute) pairs that start OS threads in this Python."""
    names = []
    for attr in ("start_new_thread", "start_new", "start_joinable_thread"):  # PYVERSIONS: 3.13 adds start_joinable_thread
        if hasattr(_thread, attr):
            names.append((_thread, attr))
    return names


del threading
