"""Threads under retrace (DESIGN §4): logical ids, idents, and locks as
ordering points.

* **Logical ids.** The parent assigns each new thread the next logical id
  *when it starts it* (program order, so the numbering is the same on record
  and replay whatever the OS does) and announces it to the replay sequencer
  (``System.expect_thread``) before the OS thread exists. The child runs its
  function as program code (``System.run``: INTERNAL, counted live by the
  sequencer while it runs).
* **Idents.** Each logical thread's ``(get_ident(), get_native_id())`` is a
  boundary call (``retrace.thread.identify``) made once when it starts, and
  ``_thread.start_new_thread``'s return value is recorded; on replay
  ``get_ident``/``get_native_id`` answer the recorded values for program
  code, so ``Thread.ident``, ``native_id``, ``threading._active`` keys and
  names built from them are as recorded. Our own code (DISABLED) sees the
  real values.
* **Locks.** ``_thread.allocate_lock``/``threading.Lock`` and
  ``_thread.RLock``/``threading.RLock`` called by program code make
  `RecordedLock` / `RecordedRLock` objects whose acquires are sync points
  (`proxy.thread_order.SyncPoints`: ``SYNC result`` written after the real
  acquire; on replay each acquire waits for its turn and then takes the real
  lock). Everything threading builds on locks (Condition, Semaphore,
  BoundedSemaphore, Event, Barrier, Timer, queue.Queue, Thread.start's
  handshake, concurrent.futures) thereby replays in recorded order. Locks
  made by our runtime (DISABLED) or before install are real and never
  recorded; the runtime also holds private references taken at import.
* **SimpleQueue.** ``_queue.SimpleQueue`` is C code with its own internal
  lock; program code gets `SimpleQueue`, a Python queue with the same API
  built on a recorded lock, so gets and puts replay in recorded order.
"""
from __future__ import annotations

import _thread
import operator
import os as _os
import sys
import threading
from collections import deque as _deque

from retracesoftware import functional as F
from retracesoftware.stream import thread_ids_changed as _thread_ids_changed
from retracesoftware.proxy.thread_order import LockIds, SyncPoints, real_wait
from retracesoftware.install.substitutes import substitute_for
from retracesoftware.utils import DISABLED, INTERNAL

_get_ident = _thread.get_ident
_get_native_id = getattr(_thread, "get_native_id", None)
_allocate_lock = _thread.allocate_lock
_RealRLock = _thread.RLock
_LockType = _thread.LockType
_Condition = threading.Condition

try:
    import _queue
    _RealSimpleQueue = _queue.SimpleQueue
    _Empty = _queue.Empty
except ImportError:  # pragma: no cover - every CPython we support has it
    _queue = None
    _RealSimpleQueue = None
    _Empty = None

MAIN = 0

# The real _thread functions, for code that must never see our patches.
import types as _types  # noqa: E402
_REAL_THREAD = _types.SimpleNamespace(**vars(_thread))


class _Ids(dict):
    """OS ident -> logical id; a thread we did not start reads -1."""

    __slots__ = ()

    def __missing__(self, ident):
        return -1


class ThreadRegistry:
    """Maps OS thread idents to logical ids (main thread = 0, see `allocate`).

    ``current()`` is native code (a dict lookup composed with
    ``_thread.get_ident``): the stream writer calls it on every write.
    """

    def __init__(self) -> None:
        self._ids = _Ids({_get_ident(): MAIN})
        self.current = F.compose(self._ids.__getitem__, _get_ident)
        self._children: dict = {}
        self._lock = _allocate_lock()
        self.idents: dict = {}   # logical id -> recorded (ident, native_id)

    def allocate(self):
        """The logical id of the calling thread's next child: the main
        thread's children are 1, 2, 3…; thread ``t``'s are ``"t.1"``,
        ``"t.2"``… Each parent numbers its own children in its own program
        order, so ids do not depend on how parents interleave."""
        parent = self.current()
        with self._lock:
            n = self._children.get(parent, 0) + 1
            self._children[parent] = n
        return n if parent == MAIN else f"{parent}.{n}"

    def logical_id(self, ident):
        """The logical id of the thread whose ``get_ident()`` is *ident*, or None."""
        return self._ids.get(ident)

    def adopt(self, tid) -> None:
        self._ids[_get_ident()] = tid
        _thread_ids_changed()     # the writer's per-thread cache of current()

    def forget(self) -> None:
        self._ids.pop(_get_ident(), None)
        _thread_ids_changed()

    def reset_after_fork(self) -> None:
        """In a forked child only the forking thread survives; it becomes 0."""
        self._ids.clear()
        self._ids[_get_ident()] = MAIN
        _thread_ids_changed()
        self._children = {}
        self._lock = _allocate_lock()


def _identify():
    return (_get_ident(), _get_native_id() if _get_native_id is not None else None)


class ThreadSupport:
    """Installs everything above for one System; ``install(installer)``."""

    def __init__(self, system, registry: ThreadRegistry):
        self.system = system
        self.registry = registry
        self.gate = system.gate
        self.replaying = system.mode == "replay"
        # Sites of locks are named past threading.py's frames and ours.
        # A lock's site is the program's frame: past threading.py, this file
        # and the type substitute's __call__ (3.13: threading.Lock is a type).
        from retracesoftware.install import substitutes
        self.lock_ids = LockIds(registry.current, (threading.__file__, __file__, substitutes.__file__))
        self.sync = SyncPoints(system, self.lock_ids)
        self.identify = system.patch_function(_identify, "retrace.thread.identify")
        self.LockType, self.Lock = self._lock_class()
        self.RLock = self._rlock_class()
        self.SimpleQueue = self._simple_queue_class()

    # ----------------------------------------------------------- classes
    def _lock_class(self):
        """The class of the locks program code makes, and a constructor.

        The class is also what the program sees as the lock type
        (``_thread.LockType``; 3.13's ``_thread.lock`` and
        ``threading.Lock``): ``type(threading.Lock()) is _thread.LockType``
        as in CPython, ``isinstance`` accepts real locks too, and a method a
        program sets on the type (blockbuster patches ``acquire`` to detect
        blocking calls in async code) is what the program's locks then
        call, as it would be for ``_thread.lock``. The type's own methods
        stay the recorded ones (what such a patch calls back). Calling the
        type makes a lock on 3.13 and raises TypeError before, as CPython's."""
        sync, system, lock_ids = self.sync, self.system, self.lock_ids
        LT = _LockType
        lock_of = operator.attrgetter("_lock")
        factory = []    # allocate_lock (below), for 3.13's callable type

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
        # try_now(lock, False): the real lock taken without blocking (native).
        try_now = F.apply_with(LT.acquire, real_of)
        RecordedLock.__enter__ = sync.acquire(F.compose(LT.__enter__, lock_of), "lock.acquire",
                                              acquire_replay, try_now=try_now)
        RecordedLock.acquire = RecordedLock.acquire_lock = sync.acquire(
            F.apply_with(LT.acquire, real_of), "lock.acquire", acquire_replay, try_now=try_now)
        RecordedLock.__exit__ = sync.plain(F.compose(LT.release, lock_of, F.first_arg))
        RecordedLock.release = RecordedLock.release_lock = sync.plain(F.compose(LT.release, lock_of))
        RecordedLock.locked = RecordedLock.locked_lock = sync.method(
            F.compose(LT.locked, lock_of), "lock.locked")
        RecordedLock.__module__ = "_thread"
        RecordedLock.__qualname__ = RecordedLock.__name__ = "lock"
        self._lock_factory = factory
        return RecordedLock, make_lock

    def _rlock_class(self):
        sync, system, lock_ids = self.sync, self.system, self.lock_ids
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

    def _simple_queue_class(self):
        gate = self.gate
        RLock = self.RLock
        real = _RealSimpleQueue

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

    # ---------------------------------------------------------- factories
    def _factories(self):
        gate, Lock, RLock = self.gate, self.Lock, self.RLock

        def allocate_lock():
            if gate.phase == INTERNAL:
                return Lock()
            return _allocate_lock()
        allocate_lock.__name__ = "allocate_lock"
        allocate_lock.__qualname__ = "allocate_lock"

        def make_rlock(*args, **kwargs):
            if gate.phase == INTERNAL:
                return RLock(*args, **kwargs)
            return _RealRLock(*args, **kwargs)
        make_rlock.__name__ = make_rlock.__qualname__ = "RLock"
        return allocate_lock, make_rlock

    def _ident_functions(self):
        gate, ids, idents = self.gate, self.registry._ids, self.registry.idents

        def get_ident():
            if gate.phase == INTERNAL:
                got = idents.get(ids[_get_ident()])
                if got is not None:
                    return got[0]
            return _get_ident()
        get_ident.__name__ = get_ident.__qualname__ = "get_ident"

        def get_native_id():
            if gate.phase == INTERNAL:
                got = idents.get(ids[_get_ident()])
                if got is not None and got[1] is not None:
                    return got[1]
            return _get_native_id()
        get_native_id.__name__ = get_native_id.__qualname__ = "get_native_id"
        return get_ident, get_native_id

    # ------------------------------------------------------------ install
    def install(self, installer) -> None:
        system, registry, gate = self.system, self.registry, self.gate
        self._installer = installer
        replacements = {}

        made = {}

        def put(module, attr, new, also=()):
            old = module.__dict__.get(attr)
            if old is None:
                return
            # A program uses these as it uses the builtins they replace:
            # class attributes, isinstance, pickle (install/substitutes.py);
            # one substitute per original, so aliases stay identical.
            key = (id(old), id(new))
            if key not in made:
                made[key] = substitute_for(old, new, also=also, home=(module.__name__, attr))
            new = made[key]
            installer.patch(module, attr, new)
            if not isinstance(old, type):
                replacements[id(old)] = (old, new)

        allocate_lock, make_rlock = self._factories()
        put(_thread, "allocate_lock", allocate_lock)
        put(_thread, "allocate", allocate_lock)
        put(_thread, "RLock", make_rlock, also=(self.RLock,))
        # The lock type as the program sees it (see _lock_class).
        # PYVERSIONS: 3.13's threading.Lock is the lock type itself, also
        # named _thread.lock.
        self._lock_factory.append(allocate_lock)
        put(_thread, "LockType", self.LockType)
        if _thread.__dict__.get("lock") is _LockType:
            put(_thread, "lock", self.LockType)
        if threading.__dict__.get("Lock") is _LockType:
            put(threading, "Lock", self.LockType)
        put(threading, "_allocate_lock", allocate_lock)
        put(threading, "_CRLock", make_rlock, also=(self.RLock,))
        if _queue is not None:
            installer.patch(_queue, "SimpleQueue", self.SimpleQueue)
            queue_mod = sys.modules.get("queue")
            if queue_mod is not None and queue_mod.__dict__.get("SimpleQueue") is _RealSimpleQueue:
                installer.patch(queue_mod, "SimpleQueue", self.SimpleQueue)

        for module, attr in thread_start_functions():
            start = getattr(module, attr)
            put(module, attr, wrap_thread_start(system, registry, start, self))

        if self.replaying:
            get_ident, get_native_id = self._ident_functions()
            put(_thread, "get_ident", get_ident)
            if _get_native_id is not None:
                put(_thread, "get_native_id", get_native_id)

        # Thread.start/_bootstrap_inner order threads in threading._active
        # under this module lock: make it an ordering point too.
        limbo = threading.__dict__.get("_active_limbo_lock")
        if type(limbo) is _LockType and not limbo.locked():
            installer.patch(threading, "_active_limbo_lock", self.Lock())

        installer.replace_everywhere(replacements)

        # The import system's module locks belong to the interpreter, not the
        # program (an import may happen on record and not on replay, where our
        # runtime already loaded the module): importlib keeps the real _thread.
        bootstrap = sys.modules.get("importlib._bootstrap")
        if bootstrap is not None and bootstrap.__dict__.get("_thread") is _thread:
            installer.patch(bootstrap, "_thread", _REAL_THREAD)

        installer.when_imported("asyncio.base_events", self._patch_asyncio)
        installer.when_imported("asyncio.tasks", self._patch_as_completed)
        installer.when_imported("concurrent.futures._base", self._patch_acquire_futures)
        self._patch_excepthook(installer)
        self._patch_join(installer)
        if self.replaying:
            self._patch_delete(installer)
        # multiprocessing.pool's handler threads poll their Thread object's
        # `_state`, which Pool.close()/terminate() set from another thread
        # with no lock: a data race whose outcome decides whether a handler
        # makes one more round of calls. Ordered, it replays as recorded.
        ordered_attribute(threading.Thread, "_state", self.Lock(), installer)
        # socketserver's serve_forever() polls a flag shutdown() sets from
        # another thread: whether the server makes one more poll() depends
        # on the race. (The lock is made now, at the same point in both
        # modes, whenever the module gets imported.)
        shutdown_lock = self.Lock()
        installer.when_imported("socketserver", lambda module: ordered_attribute(
            module.BaseServer, "_BaseServer__shutdown_request", shutdown_lock, installer)
            if hasattr(module, "BaseServer") else None)

        # The main thread: live for the deadlock watchdog; its ident recorded.
        if system.sequencer is not None:
            system.sequencer.enter(MAIN)
        old = gate.swap(INTERNAL)
        try:
            recorded = self.identify()
        finally:
            gate.phase = old
        registry.idents[MAIN] = tuple(recorded)
        if self.replaying:
            self.adopt_main_ident(recorded)

    def _patch_join(self, installer):
        """``Thread.join()``, ``join(timeout)`` and ``is_alive()``.

        * Untimed join, replay: a thread waiting in it cannot move the head
          either; the sequencer must know (`real_wait`), or a replay where
          the joined thread waits for the joiner's turn would hang instead
          of being reported.
        * ``join(timeout)`` and ``is_alive()`` tell the program how far
          another thread got, which on replay is not how far it got on
          record: both are sync points whose result (ended / alive) is
          recorded. Replay returns it; when it says the thread had ended,
          the replay first waits for that thread's real end (safe: every
          event that thread made precedes this one on the tape, so it needs
          no further turn), and a timed join that timed out returns at once
          (replay never waits out a recorded timeout)."""
        system, gate, sync = self.system, self.gate, self.sync
        replaying = self.replaying
        real_join = threading.Thread.join
        real_is_alive = threading.Thread.is_alive

        def wait_end(self_):
            def attempt(t):
                # Program phase: join's own current_thread() must see the
                # recorded idents threading._active is keyed by.
                gate.phase = INTERNAL
                try:
                    real_join(self_, t if t and t > 0 else 0)
                    return not real_is_alive(self_)
                finally:
                    gate.phase = DISABLED
            _real_wait_disabled(system, attempt, f"join {self_.name}")

        def timed_join(self_, timeout):
            real_join(self_, timeout)
            return not real_is_alive(self_)

        def ended_on_replay(self_, timeout):
            wait_end(self_)

        joined = sync.method(timed_join, "thread.join(timeout)", ended_on_replay)
        alive = sync.method(real_is_alive, "thread.is_alive")

        def join(self_, timeout=None):
            if gate.phase != INTERNAL:
                return real_join(self_, timeout)
            if timeout is None:
                if replaying:
                    wait_end(self_)
                    return None
                return real_join(self_)
            if self_ is threading.current_thread() or not self_._started.is_set():
                return real_join(self_, timeout)      # raises RuntimeError as usual
            joined(self_, timeout)
            return None

        def is_alive(self_):
            if gate.phase != INTERNAL:
                return real_is_alive(self_)
            result = alive(self_)
            if replaying and not result and real_is_alive(self_):
                wait_end(self_)
            return result

        join.__wrapped__ = real_join
        join.__name__, join.__qualname__ = "join", "Thread.join"
        is_alive.__wrapped__ = real_is_alive
        is_alive.__name__, is_alive.__qualname__ = "is_alive", "Thread.is_alive"
        installer.patch(threading.Thread, "join", join)
        installer.patch(threading.Thread, "is_alive", is_alive)

    def _patch_delete(self, installer):
        """Replay: idents are the recorded ones, and the OS reuses idents, so
        a finished thread and a later one may have the same recorded ident.
        On record the first one's ``_delete()`` necessarily ran before the
        later one existed; on replay the later one may already have put
        itself in ``threading._active`` under that key when the first one
        gets to ``_delete()``, which would remove the live thread's entry
        (its ``current_thread()`` would become a dummy thread). A thread
        removes only its own entry."""
        real_delete = threading.Thread._delete

        def _delete(self_):
            active = threading._active
            with threading._active_limbo_lock:
                ident = threading.get_ident()   # patched: the recorded ident
                if active.get(ident) is self_:
                    del active[ident]
                    return
                for key, thread in list(active.items()):
                    if thread is self_:
                        del active[key]
                        return
        _delete.__wrapped__ = real_delete
        _delete.__name__, _delete.__qualname__ = "_delete", "Thread._delete"
        installer.patch(threading.Thread, "_delete", _delete)

    def _patch_asyncio(self, module):
        """The loop's ready queue is appended to by the loop thread
        (``call_soon``, due timers) and by other threads
        (``call_soon_threadsafe``, executor futures completing) without a
        lock: the order of the handles, hence of the callbacks, would be a
        data race. The ready queue of a loop made by program code does every
        append, and the loop's reads of its emptiness and length, under one
        recorded lock, so they happen in the recorded order."""
        loop_type = getattr(module, "BaseEventLoop", None)
        original_init = loop_type.__dict__.get("__init__") if loop_type is not None else None
        if original_init is None:
            return
        lock = self.Lock()
        gate = self.gate

        class ReadyQueue(_deque):
            """The loop's ready queue (see above); ``popleft`` by the loop
            thread needs no lock: it takes the oldest of the ``len()`` items
            it counted under the lock."""
            __slots__ = ()

            def append(self, item):
                with lock:
                    _deque.append(self, item)

            def __bool__(self):
                with lock:
                    return _deque.__len__(self) != 0

            def __len__(self):
                with lock:
                    return _deque.__len__(self)

        def __init__(self_, *args, **kwargs):
            original_init(self_, *args, **kwargs)
            if gate.phase == INTERNAL and type(self_._ready) is _deque:
                self_._ready = ReadyQueue(self_._ready)

        __init__.__wrapped__ = original_init
        __init__.__qualname__ = "BaseEventLoop.__init__"
        self._installer.patch(loop_type, "__init__", __init__)

    def _patch_as_completed(self, tasks):
        """``asyncio.as_completed(aws)`` wraps the awaitables in tasks in the
        iteration order of ``set(aws)``: an order of hashes, i.e. of memory
        addresses, which differ between record and replay, so the tasks
        would be scheduled in another order. Program code gets them wrapped
        in the order it passed them (duplicates dropped, as the set did)."""
        original = tasks.__dict__.get("as_completed")
        if original is None:
            return
        gate = self.gate
        ensure_future = tasks.ensure_future
        running_loop = tasks.events._get_running_loop
        is_future, is_coroutine = tasks.futures.isfuture, tasks.coroutines.iscoroutine

        def as_completed(fs, *, timeout=None):
            if gate.phase == INTERNAL and not (is_future(fs) or is_coroutine(fs)):
                loop = running_loop()
                if loop is not None:
                    seen, ordered = set(), []
                    for aw in fs:
                        if id(aw) not in seen:
                            seen.add(id(aw))
                            ordered.append(ensure_future(aw, loop=loop))
                    fs = ordered
            return original(fs, timeout=timeout)

        as_completed.__wrapped__ = original
        as_completed.__name__ = as_completed.__qualname__ = "as_completed"
        as_completed.__doc__ = original.__doc__
        as_completed.__module__ = original.__module__
        self._installer.patch(tasks, "as_completed", as_completed)
        package = sys.modules.get("asyncio")
        if package is not None and package.__dict__.get("as_completed") is original:
            self._installer.patch(package, "as_completed", as_completed)

    def _patch_excepthook(self, installer):
        """The default ``threading.excepthook`` prints a thread's uncaught
        exception with its source lines, read from disk: our runtime's
        reading (as for the main thread's traceback), not recorded program
        I/O, whose reads would differ on replay (the source may be cached
        there). A hook the program installs runs as program code."""
        original = threading.excepthook
        if original is not getattr(threading, "__excepthook__", None):
            return
        gate = self.gate

        def excepthook(args, /):
            previous = gate.swap(DISABLED)
            try:
                return original(args)
            finally:
                gate.phase = previous
        excepthook.__wrapped__ = original
        excepthook.__name__ = excepthook.__qualname__ = "excepthook"
        excepthook.__doc__ = original.__doc__
        installer.patch(threading, "excepthook", excepthook)

    def _patch_acquire_futures(self, base):
        """``concurrent.futures.wait()``/``as_completed()`` take the futures'
        condition locks in ``id()`` order (a deadlock-free global order).
        Addresses differ on replay, so the locks would be taken in another
        order than recorded (a divergence: SYNC events name their lock).
        Futures made by program code are ordered by their lock's recorded
        identity instead (same on record and replay); others keep ``id()``."""
        acquire = base.__dict__.get("_AcquireFutures")
        original = getattr(acquire, "__init__", None) if acquire is not None else None
        if original is None:
            return

        def stable(future):
            key = getattr(getattr(getattr(future, "_condition", None), "_lock", None), "_key", None)
            return (0, key) if key is not None else (1, ("", "", id(future)))

        def __init__(self_, futures):
            self_.futures = sorted(futures, key=stable)
        __init__.__wrapped__ = original
        __init__.__qualname__ = "_AcquireFutures.__init__"
        self._installer.patch(acquire, "__init__", __init__)

    def adopt_main_ident(self, recorded):
        """On replay program code sees the recorded main ident: re-key
        threading's table of threads so current_thread() still finds it."""
        ident, native_id = recorded
        main = threading.main_thread()
        real = main.ident
        active = threading._active
        if active.get(real) is main:
            del active[real]
            active[ident] = main
        main._ident = ident
        if native_id is not None and hasattr(main, "_native_id"):
            main._native_id = native_id

    def at_exit(self) -> None:
        """Replay, at program exit: wait until the other threads (daemon
        threads still running when the recorded process ended) consumed the
        rest of the tape; a thread needing events past its end waits for
        good, as it did in the recorded process."""
        seq = self.system.sequencer
        if seq is None:
            return
        from retracesoftware.proxy.thread_order import Deadlock
        old = self.gate.swap(DISABLED)
        try:
            seq.drain()
        except Deadlock as dead:
            raise self.system.deadlock(dead) from None
        finally:
            self.gate.phase = old


def _real_wait_disabled(system, attempt, what):
    """`real_wait` from program code: our runtime's waiting (the sequencer's
    condition allocates locks) must not make recorded locks."""
    gate = system.gate
    old = gate.swap(DISABLED)
    try:
        real_wait(system, attempt, what)
    finally:
        gate.phase = old


def ordered_attribute(cls, name, lock, installer):
    """Make reads and writes of ``obj.<name>`` on instances of *cls* by
    program code sync points: each takes *lock* (a recorded lock), so their
    order across threads is recorded and replayed. For attributes that
    threads use as unlocked flags (a data race the recording could not
    otherwise reproduce). The value stays in the instance ``__dict__``."""
    if name in cls.__dict__:
        return

    class Ordered:
        __slots__ = ()

        def __get__(self, obj, owner=None):
            if obj is None:
                return self
            with lock:
                try:
                    return obj.__dict__[name]
                except KeyError:
                    raise AttributeError(
                        f"{type(obj).__name__!r} object has no attribute {name!r}") from None

        def __set__(self, obj, value):
            with lock:
                obj.__dict__[name] = value

        def __delete__(self, obj):
            with lock:
                try:
                    del obj.__dict__[name]
                except KeyError:
                    raise AttributeError(name) from None

    Ordered.__qualname__ = f"ordered_attribute.<{cls.__name__}.{name}>"
    installer.patch(cls, name, Ordered())


def wrap_thread_start(system, registry: ThreadRegistry, start, support=None):
    """Wrap ``_thread.start_new_thread``-like ``start(func, args, kwargs=None, ...)``."""
    gate = system.gate
    identify = support.identify if support is not None else None
    returns_ident = getattr(start, "__name__", "") in ("start_new_thread", "start_new")
    replaying = system.mode == "replay"
    holders: dict = {}          # recorded ident -> real lock held while its thread runs
    holders_lock = _allocate_lock()
    if replaying and hasattr(_os, "register_at_fork"):
        # In a forked child only the forking thread survives.
        _os.register_at_fork(after_in_child=holders.clear)

    def _claim_ident(ident):
        """Replay: the OS reuses idents, so a recorded ident may repeat; on
        record the thread that had it first had ended before the later one
        started. Keep that order: a thread whose recorded ident belongs to
        a logical thread still running waits until that one ended (before
        it enters threading._active or runs program code). Returns the
        real lock to release when this thread ends."""
        mine = _allocate_lock()
        mine.acquire()
        with holders_lock:
            previous = holders.get(ident)
            holders[ident] = mine
        if previous is not None and previous.locked():
            def attempt(t):
                got = previous.acquire(True, t) if t else previous.acquire(False)
                if got:
                    previous.release()
                return got
            _real_wait_disabled(system, attempt, f"the end of the thread that had ident {ident} before")
        return mine

    # start_new_thread(function, args[, kwargs]) and 3.13's
    # start_joinable_thread(function, handle=None, daemon=True) both take the
    # function first and call it in the new thread with what follows.
    def start_thread(function, *rest, **kw):
        if gate.phase != INTERNAL:
            return start(function, *rest, **kw)
        tid = registry.allocate()
        system.expect_thread(tid)

        done = [None]

        def body(*a, **k):
            if identify is not None:
                recorded = tuple(identify())
                registry.idents[tid] = recorded
                if replaying:
                    done[0] = _claim_ident(recorded[0])
            return function(*a, **k)

        def run_as_logical_thread(*a, **k):
            registry.adopt(tid)
            try:
                return system.run(body, *a, **k)
            finally:
                registry.forget()
                if done[0] is not None:
                    done[0].release()

        result = start(run_as_logical_thread, *rest, **kw)
        if returns_ident:
            # The ident the program is handed is the recorded one.
            result = system.patch_function(F.constantly(result), "retrace.thread.start")()
        return result

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
