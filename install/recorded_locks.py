"""The lock and queue types program code gets under retrace (DESIGN §4;
install/thread_support.py makes one of each per session and installs them).

* `recorded_lock_class`: ``_thread.lock`` whose acquires are sync points
  (`proxy.thread_order.SyncPoints`: ``SYNC result`` written after the real
  acquire; on replay each acquire waits for its turn and then takes the real
  lock), native from the acquire to the SYNC write.
* `recorded_rlock_class`: the same for ``_thread.RLock`` (a subclass of the
  real one), ``Condition.wait``'s ``_acquire_restore`` included.
* `simple_queue_class`: ``_queue.SimpleQueue`` is C code with its own
  internal lock; program code gets a Python queue with the same API built on
  a recorded lock, so gets and puts replay in recorded order.
"""
from __future__ import annotations

import _thread
import operator
import sys
import threading
from collections import deque as _deque

from retracesoftware import functional as F
from retracesoftware.proxy.thread_order import real_wait
from retracesoftware.utils import INTERNAL

_allocate_lock = _thread.allocate_lock
_RealRLock = _thread.RLock
_LockType = _thread.LockType
_Condition = threading.Condition

try:
    import _queue
except ImportError:  # pragma: no cover - every CPython we support has it
    _queue = None
# The real SimpleQueue (None without _queue), taken at import.
REAL_SIMPLE_QUEUE = _queue.SimpleQueue if _queue is not None else None
_Empty = _queue.Empty if _queue is not None else None


def recorded_lock_class(system, sync, lock_ids):
    """The ``_thread.lock`` type of program code: acquires are sync points of
    *sync* (a `SyncPoints`), ids from *lock_ids* (a `LockIds`).

    Returns ``(LockType, make_lock, factory)``. The class is also what the
    program sees as the lock type (``_thread.LockType``; 3.13's
    ``_thread.lock`` and ``threading.Lock``): ``type(threading.Lock()) is
    _thread.LockType`` as in CPython, ``isinstance`` accepts real locks too,
    and a method a program sets on the type (blockbuster patches ``acquire``
    to detect blocking calls in async code) is what the program's locks then
    call, as it would be for ``_thread.lock``. The type's own methods stay
    the recorded ones (what such a patch calls back). Calling the type makes
    a lock on 3.13 (through what the caller appends to *factory*, a list:
    the installed ``allocate_lock``) and raises TypeError before, as
    CPython's."""
    LT = _LockType
    lock_of = operator.attrgetter("_lock")
    factory = []

    def blocking(lock, what):
        real_wait(system, lambda t: LT.acquire(lock, True, t) if t else LT.acquire(lock, False), what)

    def acquire_replay(self_, *args, **kwargs):
        blocking(self_._lock, "lock.acquire")

    class LockTypeMeta(type):
        """The program's ``_thread.LockType`` (see above)."""

        def __call__(cls, *args, **kwargs):
            if sys.version_info >= (3, 13) and factory:
                return factory[0](*args, **kwargs)
            raise TypeError("cannot create '_thread.lock' instances")

        def __instancecheck__(cls, obj):
            return type(obj) is cls or isinstance(obj, LT)

        def __subclasscheck__(cls, sub):
            return type.__subclasscheck__(cls, sub) or issubclass(sub, LT)

    class Recorded:
        """Marks our locks for a native isinstance check (the metaclass's
        check is Python and accepts real locks too)."""
        __slots__ = ()

    class RecordedLock(Recorded, metaclass=LockTypeMeta):
        """A ``_thread.lock`` made by program code under retrace."""
        __slots__ = ("_lock", "lock_id", "_key", "__weakref__")

        def _at_fork_reinit(self):
            self._lock._at_fork_reinit()

        def __repr__(self):
            return repr(self._lock)

        def __reduce_ex__(self, protocol):
            raise TypeError("cannot pickle '_thread.lock' object")

    new = object.__new__

    def make_lock():
        lock = new(RecordedLock)
        lock._lock = _allocate_lock()
        lock.lock_id, lock._key = lock_ids.make(1)
        return lock

    # Native all the way (no Python frame between the real acquire and
    # the SYNC write, see SyncPoints): acquire(*args) is the real
    # lock's acquire with the RecordedLock argument swapped for it.
    real_of = F.if_then_else(F.isinstance_of(Recorded), lock_of, F.identity)
    # The replayed acquire takes the real lock without blocking as
    # LT.acquire(lock._lock, False), which the C++ gateway calls in C.
    RecordedLock.__enter__ = sync.acquire(F.compose(LT.__enter__, lock_of), "lock.acquire",
                                          acquire_replay, try_now=LT.acquire, real="_lock")
    RecordedLock.acquire = RecordedLock.acquire_lock = sync.acquire(
        F.apply_with(LT.acquire, real_of), "lock.acquire", acquire_replay, try_now=LT.acquire, real="_lock")
    RecordedLock.__exit__ = sync.plain(F.compose(LT.release, lock_of, F.first_arg))
    RecordedLock.release = RecordedLock.release_lock = sync.plain(F.compose(LT.release, lock_of))
    RecordedLock.locked = RecordedLock.locked_lock = sync.method(
        F.compose(LT.locked, lock_of), "lock.locked")
    RecordedLock.__module__ = "_thread"
    RecordedLock.__qualname__ = RecordedLock.__name__ = "lock"
    return RecordedLock, make_lock, factory


def recorded_rlock_class(system, sync, lock_ids):
    """The ``_thread.RLock`` type of program code, like `recorded_lock_class`."""
    RT = _RealRLock

    def blocking(self_, what):
        real_wait(system, lambda t: RT.acquire(self_, True, t) if t else RT.acquire(self_, False), what)

    def acquire_replay(self_, *args, **kwargs):
        blocking(self_, "rlock.acquire")

    try_now = RT.acquire    # try_now(rlock, False): without blocking (native)

    def acquire_restore_replay(self_, state):
        # _release_save gave (count, owner) with owner = this thread:
        # taking the lock count times as this thread restores exactly that.
        blocking(self_, "rlock.acquire (Condition.wait)")
        for _ in range(state[0] - 1):
            RT.acquire(self_)

    class RecordedRLock(RT):
        """A ``_thread.RLock`` made by program code under retrace."""
        __slots__ = ("lock_id", "_key")

        def __init__(self, *args, **kwargs):
            self.lock_id, self._key = lock_ids.make(1)

        def __reduce_ex__(self, protocol):
            raise TypeError("cannot pickle '_thread.RLock' object")

        acquire = sync.acquire(RT.acquire, "rlock.acquire", acquire_replay, try_now=try_now)
        __enter__ = sync.acquire(RT.__enter__, "rlock.acquire", acquire_replay, try_now=try_now)
        _acquire_restore = sync.acquire(RT._acquire_restore, "rlock.acquire (Condition.wait)",
                                        acquire_restore_replay, returns=None)

    RecordedRLock.__module__ = "_thread"
    RecordedRLock.__qualname__ = RecordedRLock.__name__ = "RLock"
    return RecordedRLock


def simple_queue_class(gate, RLock):
    """``_queue.SimpleQueue`` for program code, built on *RLock* (the
    recorded RLock type); other code gets the real one."""
    real = REAL_SIMPLE_QUEUE

    class SimpleQueue:
        """``queue.SimpleQueue`` for program code under retrace: the same
        API on a recorded lock (a C SimpleQueue's internal lock would
        hand items to getters in an unrecorded order)."""

        def __new__(cls, *args, **kwargs):
            if gate.phase != INTERNAL and real is not None:
                return real(*args, **kwargs)
            return object.__new__(cls)

        def __init__(self):
            self._queue = _deque()
            self._not_empty = _Condition(RLock())

        def put(self, item, block=True, timeout=None):
            with self._not_empty:
                self._queue.append(item)
                self._not_empty.notify()

        def put_nowait(self, item):
            return self.put(item, block=False)

        def get(self, block=True, timeout=None):
            with self._not_empty:
                if not block:
                    if not self._queue:
                        raise _Empty
                elif timeout is None:
                    while not self._queue:
                        self._not_empty.wait()
                elif timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
                else:
                    import time   # the program's (recorded) clock
                    endtime = time.monotonic() + timeout
                    while not self._queue:
                        remaining = endtime - time.monotonic()
                        if remaining <= 0.0:
                            raise _Empty
                        self._not_empty.wait(remaining)
                return self._queue.popleft()

        def get_nowait(self):
            return self.get(False)

        def empty(self):
            with self._not_empty:
                return not self._queue

        def qsize(self):
            with self._not_empty:
                return len(self._queue)

        __class_getitem__ = classmethod(lambda cls, item: cls)

    SimpleQueue.__module__ = "_queue"
    return SimpleQueue
