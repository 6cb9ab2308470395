"""The standard library's thread-using code made to replay in recorded order
(DESIGN §4; install/thread_support.py calls `patch_stdlib` at install).

Where threading, asyncio, concurrent.futures, multiprocessing.pool and
socketserver decide something by a race or by an address,
program code gets a version that decides it by recorded order:

* ``Thread.join``/``join(timeout)``/``is_alive`` (`patch_join`), and
  ``Thread._delete`` on replay (`patch_delete`: recorded idents repeat);
* the asyncio loop's ready queue (`patch_asyncio`) and
  ``asyncio.as_completed`` (`patch_as_completed`);
* ``concurrent.futures``' lock order (`patch_acquire_futures`);
* unlocked flags polled across threads (`ordered_attribute`);
* ``threading.excepthook`` reads sources as our runtime (`patch_excepthook`).
"""
from __future__ import annotations

import functools
import sys
import threading
from collections import deque as _deque

from retracesoftware.proxy.thread_order import real_wait
from retracesoftware.utils import DISABLED, INTERNAL


def patch_stdlib(support, installer) -> None:
    """Everything below, for the session of *support* (a `ThreadSupport`);
    called by its ``install`` at a fixed point (the locks made here take
    their recorded ids in this order)."""
    installer.when_imported("asyncio.base_events", functools.partial(patch_asyncio, support, installer))
    installer.when_imported("asyncio.tasks", functools.partial(patch_as_completed, support, installer))
    installer.when_imported("concurrent.futures._base", functools.partial(patch_acquire_futures, installer))
    patch_excepthook(support, installer)
    patch_join(support, installer)
    if support.replaying:
        patch_delete(installer)
    # multiprocessing.pool's handler threads poll their Thread object's
    # `_state`, which Pool.close()/terminate() set from another thread
    # with no lock: a data race whose outcome decides whether a handler
    # makes one more round of calls. Ordered, it replays as recorded.
    ordered_attribute(threading.Thread, "_state", support.Lock(), installer)
    # socketserver's serve_forever() polls a flag shutdown() sets from
    # another thread: whether the server makes one more poll() depends
    # on the race. (The lock is made now, at the same point in both
    # modes, whenever the module gets imported.)
    shutdown_lock = support.Lock()
    installer.when_imported("socketserver", lambda module: ordered_attribute(
        module.BaseServer, "_BaseServer__shutdown_request", shutdown_lock, installer)
        if hasattr(module, "BaseServer") else None)


def patch_join(support, installer):
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
    system, gate, sync = support.system, support.gate, support.sync
    replaying = support.replaying
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
        real_wait_disabled(system, attempt, f"join {self_.name}")

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


def patch_delete(installer):
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


def patch_asyncio(support, installer, module):
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
    lock = support.Lock()
    gate = support.gate

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

    # A loop made before the install (a pytest fixture's, under
    # ``pytest --retrace``: install/testing.py) gets one for a pass.
    support.ReadyQueue = ReadyQueue

    __init__.__wrapped__ = original_init
    __init__.__qualname__ = "BaseEventLoop.__init__"
    installer.patch(loop_type, "__init__", __init__)


def patch_as_completed(support, installer, tasks):
    """``asyncio.as_completed(aws)`` wraps the awaitables in tasks in the
    iteration order of ``set(aws)``: an order of hashes, i.e. of memory
    addresses, which differ between record and replay, so the tasks
    would be scheduled in another order. Program code gets them wrapped
    in the order it passed them (duplicates dropped, as the set did)."""
    original = tasks.__dict__.get("as_completed")
    if original is None:
        return
    gate = support.gate
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
    installer.patch(tasks, "as_completed", as_completed)
    package = sys.modules.get("asyncio")
    if package is not None and package.__dict__.get("as_completed") is original:
        installer.patch(package, "as_completed", as_completed)


def patch_excepthook(support, installer):
    """The default ``threading.excepthook`` prints a thread's uncaught
    exception with its source lines, read from disk: our runtime's
    reading (as for the main thread's traceback), not recorded program
    I/O, whose reads would differ on replay (the source may be cached
    there). A hook the program installs runs as program code."""
    original = threading.excepthook
    if original is not getattr(threading, "__excepthook__", None):
        return
    gate = support.gate

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


def patch_acquire_futures(installer, base):
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
    installer.patch(acquire, "__init__", __init__)


def real_wait_disabled(system, attempt, what):
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
