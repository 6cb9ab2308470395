"""Logical thread ids and the replay-side `ThreadSequencer`.

On replay a thread may consume its next event only when the head of the tape
belongs to it (DESIGN §4). Threads that are not at the head wait on a
condition variable (no polling); every consumer wakes the waiters after it
moved the head. A deadlock watchdog arms only when *every* live replaying
thread is waiting: then no thread can ever move the head again, unless a
thread is still starting up, so after ``deadlock_timeout`` seconds of that
state the replay is reported as diverged, naming the threads. In a healthy
replay that state never lasts, so the timeout never fires.

Our own runtime must not go through patched attributes, so the locks come
from ``_thread`` captured at import (coverage.py's ``isolate_module`` habit).
"""
from __future__ import annotations

import _thread

from retracesoftware.proxy.protocol import at_end
import threading as _threading
import time as _time

_allocate_lock = _thread.allocate_lock
_get_ident = _thread.get_ident
_RLock = _thread.RLock
_Condition = _threading.Condition
_monotonic = _time.monotonic


class ThreadIds:
    """Logical thread ids: a callable returning the calling thread's id.

    ``set(tid)`` names the calling thread (the installer does this when a
    thread starts, with an id its parent assigned in start order); a thread
    that never called ``set`` gets the next free integer on first use (the
    first such thread gets 0), which is only deterministic for threads that
    make their first boundary call in a fixed order.
    """

    def __init__(self):
        self._ids: dict[int, object] = {}
        self._next = 0
        self._lock = _allocate_lock()

    def set(self, tid):
        self._ids[_get_ident()] = tid

    def __call__(self):
        ident = _get_ident()
        tid = self._ids.get(ident, _MISSING)
        if tid is _MISSING:
            with self._lock:
                tid = self._ids.get(ident, _MISSING)
                if tid is _MISSING:
                    tid = self._next
                    self._next += 1
                    self._ids[ident] = tid
        return tid


_MISSING = object()


class Deadlock(Exception):
    """Raised inside the sequencer; System turns it into ReplayDivergence."""

    def __init__(self, head, waiting, finished):
        super().__init__(head, waiting, finished)
        self.head = head
        self.waiting = waiting
        self.finished = finished


class ThreadSequencer:
    """Serialises reads of a `Reader` by the tape's thread order.

    ``live``: logical threads currently replaying (``enter``/``leave``) or
    announced by their parent (``expect``). ``turn()`` is a context manager
    held while reading: entered, the head of the tape belongs to the caller
    (or the tape is at its end), and no other thread reads.
    """

    def __init__(self, reader, thread_id, *, deadlock_timeout=5.0):
        self._reader = reader
        self._thread_id = thread_id
        self._cond = _Condition(_RLock())  # re-entrant: fail() may run inside a turn
        self._live: dict[object, int] = {}     # tid -> nesting count (pending = 0 allowed)
        self._expected: set = set()
        self._finished: set = set()
        self._waiting: dict[object, object] = {}   # tid -> head it saw
        self._failure = None
        self.deadlock_timeout = deadlock_timeout

    # -- liveness --------------------------------------------------------
    def expect(self, tid):
        """A parent announces a child thread before starting it."""
        with self._cond:
            self._expected.add(tid)
            self._finished.discard(tid)
            self._cond.notify_all()

    def enter(self, tid):
        with self._cond:
            self._expected.discard(tid)
            self._finished.discard(tid)
            self._live[tid] = self._live.get(tid, 0) + 1
            self._cond.notify_all()

    def leave(self, tid):
        with self._cond:
            n = self._live.get(tid, 0) - 1
            if n <= 0:
                self._live.pop(tid, None)
                self._finished.add(tid)
            else:
                self._live[tid] = n
            self._cond.notify_all()

    def fail(self, exc):
        """Make every waiting and future reader raise *exc*'s kind."""
        with self._cond:
            if self._failure is None:
                self._failure = exc
            self._cond.notify_all()

    @property
    def failure(self):
        return self._failure

    # -- turns -----------------------------------------------------------
    def _all_blocked(self):
        # A waiting thread is live by definition; the others are live when
        # entered or announced.
        return (set(self._live) | self._expected) <= set(self._waiting)

    def _wait_out_deadlock(self, head):
        """Every live thread waits and none owns the head: unless a thread
        that is still starting up arrives (or the state changes) within
        ``deadlock_timeout``, no thread will ever move the head again."""
        deadline = _monotonic() + self.deadlock_timeout
        while True:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise Deadlock(head, dict(self._waiting), set(self._finished))
            self._cond.wait(remaining)
            if (self._failure is not None or not self._all_blocked()
                    or self._reader.thread != head):
                return

    def acquire(self):
        """Wait until the head is ours; return with the condition held."""
        cond = self._cond
        cond.acquire()
        try:
            me = self._thread_id()
            while True:
                if self._failure is not None:
                    raise self._failure
                head = self._reader.thread
                if head is None or head == me or at_end(self._reader):
                    return
                self._waiting[me] = head
                try:
                    if self._all_blocked():
                        self._wait_out_deadlock(head)
                    else:
                        cond.wait()
                finally:
                    self._waiting.pop(me, None)
        except BaseException:
            cond.release()
            raise

    def release(self):
        cond = self._cond
        if self._waiting:
            cond.notify_all()
        cond.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
