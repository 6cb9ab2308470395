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
  The types are in install/recorded_locks.py.
* **SimpleQueue.** ``_queue.SimpleQueue`` is C code with its own internal
  lock; program code gets `SimpleQueue`, a Python queue with the same API
  built on a recorded lock, so gets and puts replay in recorded order
  (install/recorded_locks.py too).
* **The standard library's races** (``Thread.join``/``is_alive``, asyncio's
  ready queue, ``concurrent.futures``' lock order, flags polled across
  threads) are made ordering points by install/thread_stdlib.py.
"""
from __future__ import annotations

import _thread
import os as _os
import sys
import threading

from retracesoftware import functional as F
from retracesoftware.stream import thread_ids_changed as _thread_ids_changed
from retracesoftware.proxy.thread_order import LockIds, SyncPoints
from retracesoftware.install.recorded_locks import (REAL_SIMPLE_QUEUE, recorded_lock_class, recorded_rlock_class,
                                                    simple_queue_class)
from retracesoftware.install.substitutes import substitute_for
from retracesoftware.install.thread_stdlib import patch_stdlib, real_wait_disabled
from retracesoftware.utils import DISABLED, INTERNAL

_get_ident = _thread.get_ident
_get_native_id = getattr(_thread, "get_native_id", None)
_allocate_lock = _thread.allocate_lock
_RealRLock = _thread.RLock
_LockType = _thread.LockType

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
        # A lock's site is the program's frame: past threading.py, this file,
        # the lock types and stdlib patches it installs, and the type
        # substitute's __call__ (3.13: threading.Lock is a type).
        from retracesoftware.install import recorded_locks, substitutes, thread_stdlib
        self.lock_ids = LockIds(registry.current, (threading.__file__, __file__, recorded_locks.__file__,
                                                   thread_stdlib.__file__, substitutes.__file__))
        self.sync = SyncPoints(system, self.lock_ids)
        self.identify = system.patch_function(_identify, "retrace.thread.identify")
        # LockType: the class (what the program sees as _thread.LockType);
        # Lock(): a new recorded lock.
        self.LockType, self.Lock, self._lock_factory = recorded_lock_class(system, self.sync, self.lock_ids)
        self.RLock = recorded_rlock_class(system, self.sync, self.lock_ids)
        self.SimpleQueue = simple_queue_class(self.gate, self.RLock)

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
        # The lock type as the program sees it (see recorded_lock_class).
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
        if REAL_SIMPLE_QUEUE is not None:      # _queue exists (recorded_locks imported it)
            import _queue
            installer.patch(_queue, "SimpleQueue", self.SimpleQueue)
            queue_mod = sys.modules.get("queue")
            if queue_mod is not None and queue_mod.__dict__.get("SimpleQueue") is REAL_SIMPLE_QUEUE:
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

        patch_stdlib(self, installer)

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
            real_wait_disabled(system, attempt, f"the end of the thread that had ident {ident} before")
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
