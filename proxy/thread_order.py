"""Logical thread ids and the replay-side `ThreadSequencer`.

On replay a thread may consume its next event only when the head of the tape
belongs to it (DESIGN §4). Threads that are not at the head wait on their own
wake-up permit (`utils.TurnState`: native, the GIL released, no polling); the
thread that moves the head wakes the thread whose turn it now is. The replay
gateways (`utils.ReplayCallGateway`, `utils.ReplaySyncGateway`) wait on the
same permits natively and hand the turn over natively, so a thread switch
between two plain calls or lock acquires runs no Python frame. A deadlock watchdog arms only when *every* live replaying
thread is waiting: then no thread can ever move the head again, unless a
thread is still starting up, so after ``deadlock_timeout`` seconds of that
state the replay is reported as diverged, naming the threads. In a healthy
replay that state never lasts, so the timeout never fires.

Our own runtime must not go through patched attributes, so the locks come
from ``_thread`` captured at import (coverage.py's ``isolate_module`` habit).
"""
from __future__ import annotations

import _thread

import operator
import os as _os
from zlib import crc32 as _crc32
import sys
from collections import deque as _deque
import threading as _threading
import time as _time

from retracesoftware import functional as F
from retracesoftware.proxy.protocol import at_end, event_index
from retracesoftware.utils.errors import ReplayDivergence as ReplayDivergenceType
from retracesoftware.utils import (DISABLED, RecordGateway, ReplayGateway, ReplaySyncGateway, TurnState,
                                   thread_ids_changed as _thread_ids_changed)

_allocate_lock = _thread.allocate_lock
_get_ident = _thread.get_ident
_getframe = sys._getframe
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
        _thread_ids_changed()     # the replay gateways' per-thread cache of this

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


#: RETRACE_DEBUG_SEQUENCER=1: the last sequencer steps, dumped with a
#: deadlock report (docs/THREADS.md).
_TRACE = _deque(maxlen=60) if _os.environ.get("RETRACE_DEBUG_SEQUENCER") else None

_OWN_DIR = __file__.rsplit("/proxy/", 1)[0] + "/"


def _program_frames(os_idents, tids):
    """tid -> "file:line" of the innermost frame outside our runtime of each
    stuck thread (where the program waits), for the deadlock report."""
    frames = sys._current_frames()
    where = {}
    for tid in tids:
        frame = frames.get(os_idents.get(tid))
        # Innermost first: frames of a primitive our runtime waits in
        # (threading.Condition), then our runtime's, then the program's.
        seen_own = False
        while frame is not None:
            own = frame.f_code.co_filename.startswith(_OWN_DIR)
            if own:
                seen_own = True
            elif seen_own:
                break
            frame = frame.f_back
        if frame is not None:
            where[tid] = f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
    return where


class Deadlock(Exception):
    """Raised inside the sequencer; System turns it into ReplayDivergence."""

    def __init__(self, head, waiting, finished, blocked=None, reserved=None, at_end=False):
        super().__init__(head, waiting, finished)
        self.head = head
        self.waiting = waiting      # tid -> what it waits a turn for
        self.finished = finished
        self.blocked = blocked or {}  # tid -> real primitive it blocks in after its turn
        self.reserved = reserved    # thread holding the turn reservation (or None)
        self.at_end = at_end
        self.where = {}             # tid -> "file:line" where the program waits
        self.next_event = None      # what the head event is ("call time.time", ...)

    def describe(self):
        """One clause per stuck thread: what it waits for."""
        parts = []
        for tid in sorted(set(self.waiting) | set(self.blocked), key=repr):
            if tid in self.blocked:
                text = f"thread {tid} blocks in {self.blocked[tid]} after its turn"
            else:
                what = self.waiting[tid]
                what = what[1] if isinstance(what, tuple) else None
                text = f"thread {tid} waits for its turn" + (f" at {what}" if what else "")
            if tid in self.where:
                text += f" ({self.where[tid]})"
            if tid == self.reserved:
                text += " (holding the turn)"
            parts.append(text)
        if self.reserved is not None and self.reserved not in self.waiting \
                and self.reserved not in self.blocked:
            parts.append(f"thread {self.reserved} holds the turn")
        if (not self.at_end and self.head is not None
                and self.head not in self.waiting and self.head not in self.blocked):
            parts.insert(0, f"thread {self.head} never came")
        return "; ".join(parts) or "no thread is live"


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
        self._lock = _RLock()               # re-entrant: fail() may run inside a turn
        self._cond = _Condition(self._lock)  # held for every decision (never waited on)
        #: the native part (utils): ``closed`` is non-zero while a thread
        #: holds, reserves or looks for a turn, or after a failure (then
        #: replayed calls take the Python path below); each thread waits on
        #: its own permit there (``wait``/``wake``), and ``handover`` wakes the
        #: thread whose turn it is, calling `_handover_slow` only at the end
        #: of the tape or while draining
        self.turn = TurnState()
        self.turn.moved = self._handover_slow
        #: what ReplayCallGateway calls when the head left the caller's thread
        self.handover = self.turn.handover
        self._live: dict[object, int] = {}     # tid -> nesting count (pending = 0 allowed)
        self._expected: set = set()
        self._finished: set = set()
        self._waiting: dict[object, object] = {}   # tid -> head it saw
        self._blocked: dict[object, object] = {}   # tid -> what it waits for outside the tape
        self._os_idents: dict[object, int] = {}    # tid -> OS ident (for deadlock reports)
        self._permits_made: set = set()           # tids wait_until made a permit for
        self._failure = None
        self._draining = False
        self._exiting = False
        self.main_thread = 0   # logical id of the thread that runs the program's exit
        #: a parent has announced a child thread (`expect`): until then the
        #: replay has one thread, and no other thread's event can come
        #: between two of its own
        self.threads_announced = False
        self._reserved = None  # a thread still completing its turn (see reserve)
        self.deadlock_timeout = deadlock_timeout
        #: called (condition held) when a turn consumed the tape's last event
        self.on_end = None
        #: replay: called (under the condition) after a move when the reader
        #: says ``async_next``: the head is an asynchronous event, or the
        #: calling thread has one later on the tape (install/signals.py)
        self.on_async = None
        #: replay: called once, before the first thread other than the
        #: first is announced (install/signals.py indexes the tape then)
        self.on_first_expect = None
        #: () -> bool: the tape is used up (set with on_end; a cheap probe)
        self.end_probe = lambda: at_end(self._reader)
        #: () -> str naming the event at the head (consumes it), for deadlock reports
        self.describe_next = None
        #: --schedule (install/schedule.py): before_turn(tid) when a thread
        #: asks for a turn, after_move() after the head moved (condition held)
        self.before_turn = None
        self.after_move = None
        #: --schedule: before_block(tid) when a thread blocks in a real
        #: primitive outside the tape (wait_real; condition held)
        self.before_block = None

    @property
    def deadlock_timeout(self):
        return self._deadlock_timeout

    @deadlock_timeout.setter
    def deadlock_timeout(self, seconds):
        # A gateway waits natively at most a quarter of it, then takes the
        # Python path, whose watchdog reports a deadlock.
        self._deadlock_timeout = seconds
        self.turn.native_wait = seconds / 4

    @property
    def _changes(self):
        return self.turn.changes

    @property
    def decisions(self):
        """The condition held for every turn decision: while it is held the
        tape's head and the set of live threads stand still."""
        return self._cond

    def _changed(self):
        """The state changed (caller holds the condition): wake every waiter."""
        turn = self.turn
        turn.changes += 1
        turn.wake_all()

    # -- hooks for what waits beside the tape (install/schedule.py) -------
    def changed(self):
        """Public: state that waiting threads check changed (caller holds
        `decisions`): wake every waiter, restart the deadlock clock."""
        self._changed()

    def wait_until(self, me, ready, what):
        """Public: wait (caller holds `decisions`) until ``ready()`` is true,
        counted as waiting for a turn (*what* names it in a deadlock report),
        so the watchdog covers the wait: `Deadlock` when no thread could
        move for ``deadlock_timeout``; the sequencer's failure is raised.
        Whoever makes ``ready()`` true calls `changed`."""
        if me not in self._permits_made:
            # The thread's permit must exist before it checks: wake_all()
            # skips a thread that never waited, and the check-then-sleep
            # below releases the condition in between. A first permit
            # makes at most one spurious wake-up.
            self.turn.wake(me)
            self._permits_made.add(me)
        stuck = [None, 0.0]
        while not ready():
            if self._failure is not None:
                raise self._failure
            head = self._reader.thread
            self._waiting[me] = (head, what)
            self._os_idents[me] = _get_ident()
            self.turn.closed += 1
            try:
                self._wait_turn(head, stuck, me)
            finally:
                self.turn.closed -= 1
                self._waiting.pop(me, None)

    def _wake_head(self):
        """The head moved (caller holds the condition): wake the thread
        whose turn it now is, and the threads draining at exit. Everyone
        when the head is not a thread's (the end, damage)."""
        turn = self.turn
        turn.changes += 1
        try:
            head = self._reader.thread
            ended = self.end_probe()
        except Exception:           # damaged: everyone re-reads and reports
            head, ended = None, True
        if ended or head is None or self._draining:
            turn.wake_all()
        else:
            try:
                turn.wake(head)
            except TypeError:       # an unhashable (forged) thread id
                turn.wake_all()

    def _sleep(self, me, timeout=None):
        """Wait for this thread's permit with the condition released (caller
        holds it, maybe re-entered), the GIL released while waiting."""
        state = self._lock._release_save()
        try:
            self.turn.wait(me, timeout)
        finally:
            self._lock._acquire_restore(state)

    # -- liveness --------------------------------------------------------
    def expect(self, tid):
        """A parent announces a child thread before starting it."""
        hook, self.on_first_expect = self.on_first_expect, None
        if hook is not None:
            hook()
        self.threads_announced = True
        with self._cond:
            self._expected.add(tid)
            self._finished.discard(tid)
            self._changed()

    def enter(self, tid):
        with self._cond:
            self._expected.discard(tid)
            self._finished.discard(tid)
            self._live[tid] = self._live.get(tid, 0) + 1
            self._changed()

    def leave(self, tid):
        with self._cond:
            n = self._live.get(tid, 0) - 1
            if n <= 0:
                self._live.pop(tid, None)
                self._finished.add(tid)
            else:
                self._live[tid] = n
            self._changed()

    def fail(self, exc):
        """Make every waiting and future reader raise *exc*'s kind."""
        with self._cond:
            if self._failure is None:
                self._failure = exc
                self.turn.closed += 1    # for good: no fast path after a failure
            self._changed()

    @property
    def failure(self):
        return self._failure

    # -- turns -----------------------------------------------------------
    def _all_blocked(self):
        # A waiting thread is live by definition; the others are live when
        # entered or announced. A thread blocked on a real lock after its
        # turn (`wait_real`) cannot move the head either.
        return (set(self._live) | self._expected) <= (set(self._waiting) | set(self._blocked))

    def _deadlock(self, head):
        dead = Deadlock(head, dict(self._waiting), set(self._finished), dict(self._blocked),
                        self._reserved, at_end(self._reader))
        dead.where = _program_frames(self._os_idents, set(dead.waiting) | set(dead.blocked))
        if self.describe_next is not None and not dead.at_end:
            try:
                # The replay is over: consuming the head to name it is fine.
                dead.next_event = self.describe_next()
            except Exception:
                pass
        if _TRACE is not None:
            self._dump_trace()
        return dead

    def _dump_trace(self):
        """RETRACE_DEBUG_SEQUENCER: the last steps and each stuck thread's
        stack, on stderr (a debugging aid for us, next to the report)."""
        import traceback
        write = sys.stderr.write
        write(f"SEQ reserved={self._reserved} live={self._live} expected={self._expected}\n")
        for item in list(_TRACE):
            write(f"SEQ {item}\n")
        frames = sys._current_frames()
        for tid, ident in self._os_idents.items():
            frame = frames.get(ident)
            if frame is not None:
                write(f"SEQ stack of {tid}:\n" + "".join(
                    "SEQ   " + line.replace("\n", "\nSEQ   ") + "\n"
                    for line in traceback.format_stack(frame)[-7:]))

    def _wait_turn(self, head, stuck, me=None):
        """Wait once on the condition (caller holds it); the caller then
        re-evaluates everything. *stuck* is the caller's ``[changes, since]``:
        while every live thread waits (for a turn or a real lock) the state
        can only move if a thread still starting up arrives, so when it has
        not changed for ``deadlock_timeout`` no thread will ever move the
        head again: `Deadlock`. Any change (an event consumed, a thread
        entering, leaving or unblocking, a turn reservation ending) restarts
        the clock; in a healthy replay the timeout never matters."""
        me = self._thread_id() if me is None else me
        turn = self.turn
        if not self._all_blocked():
            stuck[0] = None
            turn.closed -= 1         # not looking while asleep
            try:
                self._sleep(me)
            finally:
                turn.closed += 1
            return
        remaining = self.deadlock_timeout - self._unchanged_for(stuck)
        if remaining <= 0:
            raise self._deadlock(head)
        turn.closed -= 1
        try:
            self._sleep(me, remaining)
        finally:
            turn.closed += 1

    def _unchanged_for(self, stuck):
        """Seconds the state has not changed, tracked in the caller's
        ``stuck = [changes, since]`` (caller holds the condition)."""
        now = _monotonic()
        if stuck[0] != self._changes:
            stuck[0], stuck[1] = self._changes, now
        return now - stuck[1]

    def acquire(self, what=None):
        """Wait until the head is ours; return with the condition held.

        *what* describes what the caller is about to do (named in a deadlock
        report)."""
        cond = self._cond
        cond.acquire()
        turn = self.turn
        turn.closed += 1             # looking at the head: no fast path meanwhile
        try:
            me = self._thread_id()
            if me not in self._permits_made:
                # As in wait_until: the thread's permit exists before it
                # checks the head, or a wake_all() (`_changed`: a turn's
                # reservation ending) between its check and its sleep
                # skips it (a new thread whose event is at the head slept
                # on: a deadlock reported in CI, Python backend).
                self.turn.wake(me)
                self._permits_made.add(me)
            if self.before_turn is not None:
                self.before_turn(me)
            stuck = [None, 0.0]
            while True:
                if self._failure is not None:
                    raise self._failure
                head = self._reader.thread
                if at_end(self._reader):
                    if me in self._drainers or me == self.main_thread:
                        return          # the caller reports the missing event
                    if self._exiting:
                        self._park(me)
                    # The recording ends where the recorded process exited:
                    # another thread needing more events was still running
                    # then (a daemon thread). It waits for the program to
                    # exit, as it did then; if nothing else can run, the
                    # watchdog reports it.
                elif self._reserved is not None and self._reserved != me:
                    pass                # another thread finishes its turn's real lock acquire
                elif head is None or head == me:
                    if _TRACE is not None:
                        self._t("turn", head)
                    return
                if _TRACE is not None:
                    self._t("wait", head, self._reserved)
                self._waiting[me] = head if what is None else (head, what)
                self._os_idents[me] = _get_ident()
                try:
                    self._wait_turn(head, stuck, me)
                finally:
                    self._waiting.pop(me, None)
        except BaseException:
            turn.closed -= 1
            cond.release()
            raise

    def release(self):
        """End the turn `acquire` gave (the head moved, or may have)."""
        try:
            self._moved()
        finally:
            self.turn.closed -= 1
            self._cond.release()

    def _handover_slow(self):
        """`TurnState.handover` at the end of the tape, while draining, when
        the raw reader cannot say whose turn it is, or when it says
        ``async_next``: what `release` does after a turn."""
        with self._cond:
            # The native hand-over found an asynchronous event (or a mark)
            # at the head right after this thread's take, but another
            # thread may have taken the events after that mark while this
            # thread waited for the condition: on_async looks for a mark
            # this thread passed, not for the head being one.
            self._moved(hand_over=True)

    def _moved(self, hand_over=False):
        on_async = self.on_async
        if on_async is not None and (hand_over or self._reader.async_next):
            # The calling thread's next event is asynchronous (SIGNAL), at
            # the head or later on the tape: it happens at a position before
            # the thread's next boundary call, which on_async
            # (install/signals.py) arms the search for.
            on_async()
        if self.after_move is not None:
            self.after_move()
        if self.on_end is not None:
            try:
                ended = self.end_probe()
            except Exception:       # damaged: the next read reports it
                ended = False
            if ended:
                self.on_end()
        self._wake_head()

    def _t(self, *what):
        _TRACE.append((self._thread_id(), event_index(self._reader), *what))

    def reserve(self):
        """Inside a turn: keep every other thread from taking a turn until
        `unreserve` — the caller consumed its event and must still complete
        the real operation it stands for (a lock acquire) before any later
        event may happen. Without this a thread whose turn comes later could
        grab the real lock first."""
        if self._reserved is None:
            self.turn.closed += 1
        self._reserved = self._thread_id()
        if _TRACE is not None:
            self._t("reserve")

    def unreserve(self):
        with self._cond:
            if _TRACE is not None:
                self._t("unreserve", self._reserved)
            if self._reserved is not None:
                self.turn.closed -= 1
            self._reserved = None
            self._changed()

    # -- blocking outside the tape ---------------------------------------
    def wait_real(self, attempt, what):
        """Block in a real primitive after this thread's turn (a replayed
        lock acquire that the recording says succeeded).

        ``attempt(timeout)`` tries the real operation, blocking at most
        *timeout* seconds (0: do not block), and returns whether it succeeded.
        While it blocks the thread counts as unable to move the head, so a
        replay in which every thread waits (for a turn or a real lock) is
        reported as a `Deadlock` after ``deadlock_timeout``; in a healthy
        replay the holder releases and the wait ends without any timeout
        mattering."""
        if attempt(0):
            return
        me = self._thread_id()
        with self._cond:
            if self.before_block is not None:
                self.before_block(me)
            self._blocked[me] = what
            self._os_idents[me] = _get_ident()
            self._changed()
        try:
            # Re-check every slice; report only a state that did not change
            # for deadlock_timeout (a waiting head owner may just not have
            # been scheduled yet).
            step = self.deadlock_timeout / 4
            stuck = [None, 0.0]
            while True:
                if attempt(step):
                    return
                with self._cond:
                    if self._failure is not None:
                        raise self._failure
                    if not self._all_blocked():
                        stuck[0] = None
                    elif self._unchanged_for(stuck) >= self.deadlock_timeout - step / 2:
                        raise self._deadlock(self._reader.thread)
        finally:
            with self._cond:
                self._blocked.pop(me, None)
                self._changed()

    # -- the end of the program ------------------------------------------
    _drainers: frozenset = frozenset()

    def _park(self, me):
        """A thread that needs events past the end of a finished recording
        (a daemon thread still running when the recorded process exited)
        waits here for good, as it did in the recorded process — unless the
        replay is failed (`fail`: pytest --retrace stops a thread that
        outlived its test's replay; a parked non-daemon thread would hang
        the process at exit)."""
        self._live.pop(me, None)
        self._changed()
        self.turn.closed -= 1        # for good: this thread never looks again
        while self._failure is None:
            self._sleep(me)
        self.turn.closed += 1        # acquire's exit takes it back
        raise self._failure

    def drain(self):
        """At program exit (replay): the calling thread stops replaying and
        waits until the other threads consumed the rest of the tape (daemon
        threads' last events may follow the main thread's). Returns at the
        end of the tape, or when the head belongs to the caller (the caller's
        own missing events: `System.finish` reports them); raises `Deadlock`
        when no live thread can move the head for ``deadlock_timeout``."""
        with self._cond:
            me = self._thread_id()
            self._live.pop(me, None)
            self._drainers = self._drainers | {me}
            self._draining = True
            self.turn.draining = 1
            self._exiting = True
            self._changed()
            stuck = [None, 0.0]
            self.turn.closed += 1
            try:
                if self.before_turn is not None:
                    self.before_turn(me, False)
                while True:
                    if self._failure is not None:
                        raise self._failure
                    if at_end(self._reader):
                        return
                    head = self._reader.thread
                    if head == me or head is None:
                        return
                    self._wait_turn(head, stuck, me)
            finally:
                self.turn.closed -= 1

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


# ---------------------------------------------------------------- sync points
SYNC = "SYNC"                # SYNC value            a synchronisation point completed
SYNC_ERROR = "SYNC_ERROR"    # SYNC_ERROR exception  it raised


class LockIds:
    """Deterministic ids for the program's locks, written in their ``SYNC``
    events so a replay that hands a thread another lock's acquire (a
    changed program replayed with ``--force``) diverges at once instead of
    leaving real lock states astray.

    A lock's id is a 7-bit hash (one byte on the tape, as ``True`` was) of
    (creating logical thread, creation site, how many locks that thread made
    at that site before). The site is the innermost frame outside
    ``threading.py`` that asked for the lock, named by file basename and
    ``co_qualname`` (no line numbers, no directories: the same code
    installed elsewhere gets the same ids). Counting per site keeps ids
    stable when another site's locks differ in number between record and
    replay (a module imported by the program on record but by our runtime
    before the replay began). 7 bits: a mismatch escapes detection with
    probability 1/128 per event, and a diverged program makes many."""

    MASK = 0x7F

    def __init__(self, thread_id, skip_files=()):
        self._thread_id = thread_id
        self._counts: dict = {}
        self._skip = frozenset(skip_files)
        #: replay: id -> where the last lock with that id was made (reports)
        self.sites: dict = {}

    def __call__(self, depth=1):
        """The id of a lock made by the caller *depth* frames up; ``True``
        (recorded, never checked) for a lock made by a thread that has no
        logical id (started before install or by C code): such threads share
        one id, so their creation counts are not deterministic."""
        return self.make(depth + 1)[0]

    def make(self, depth=1):
        """``(id, key)``: the id (above) and the lock's whole identity
        ``(thread, site, count)`` as strings and an int, a sort key that is
        the same on record and replay (code that orders locks by ``id()``,
        such as concurrent.futures' wait(), orders them by it instead); None
        for a lock made by a thread without a logical id."""
        tid = self._thread_id()
        if tid == -1:
            return True, None
        try:
            frame = _getframe(depth + 1)
        except ValueError:      # called with a shallower stack (from C)
            frame = _getframe(1)
        skip = self._skip
        while frame.f_back is not None and frame.f_code.co_filename in skip:
            frame = frame.f_back
        code = frame.f_code
        site = f"{code.co_filename.rsplit('/', 1)[-1]}:{getattr(code, 'co_qualname', code.co_name)}"
        key = (tid, site)
        n = self._counts.get(key, 0)
        self._counts[key] = n + 1
        lock_id = _crc32(f"{key[0]}|{site}|{n}".encode()) & self.MASK
        self.sites[lock_id] = f"lock #{lock_id} (made {_ordinal(n + 1)} in {site} by thread {key[0]})"
        return lock_id, (str(tid), site, n)

    def describe(self, lock_id):
        return self.sites.get(lock_id, f"lock #{lock_id}")


def _ordinal(n):
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


_ID_OF = F.compose(operator.attrgetter("lock_id"), F.first_arg)
_SUCCEEDED = F.partial(operator.is_not, False)


class SyncPoints:
    """Synchronisation points (lock acquires) as ordering events.

    A sync point is an operation on an object private to the program whose
    *order* across threads is what matters, not data from outside: a lock
    acquire. Record: the real operation runs, then ``SYNC result`` is
    written — after it completed, so the tape order of acquires of one lock
    is the order in which threads got it (the writer is called while the
    lock is held, in native code: no point where the GIL could pass to a
    thread that would then block on the lock). For a lock acquire the
    result is the lock's id (`LockIds`) when it succeeded, ``False`` when it
    did not; the events are ordered per thread, and the sequencer hands
    each thread its events in tape order.

    Replay: the thread waits for its turn (its ``SYNC`` at the head of the
    tape), consumes it, checks that it was recorded for the same lock (else
    a divergence naming both), *then* performs the real operation when the
    recording says it succeeded (``on_replay``), blocking if it must. The
    real acquire is kept (rather than skipped) so every lock's real state —
    ``locked()``, an RLock's owner and count, a Condition's waiter locks —
    stays what the program expects, and because it is always safe: every
    event the previous holder wrote before releasing precedes this acquire
    on the tape, so when our turn comes the holder needs no further turn to
    release; it releases by running its own code. A try-acquire or timed
    acquire that failed (``SYNC False``) returns False at once: replay never
    waits out a recorded timeout. Releases are not events (they never
    block).

    Built from `utils` gateways and `functional` combinators so the record
    path is native code (C++ backend); each gateway binds like a method.
    """

    def __init__(self, system, lock_ids=None):
        self.system = system
        self.gate = system.gate
        self.mode = system.mode
        self.lock_ids = lock_ids
        if self.mode == "record":
            write = system.writer.write
            self._after = F.side_effect(F.partial(write, SYNC))
            self._error = F.partial(write, SYNC_ERROR)

    def method(self, target, name, on_replay=None):
        """A method (binds ``self``) that is a sync point. *target*
        ``(self, *args)`` is the real operation; on replay, when the recorded
        result is not False, ``on_replay(self, *args)`` (if given) performs
        the real effect after the turn, and the recorded result is returned."""
        if self.mode == "record":
            return RecordGateway(self.gate, target, None, self._after, self._error)
        replay = _SyncReplay(self.system, name, on_replay)
        return ReplayGateway(self.gate, target, replay)

    def acquire(self, target, name, on_replay, returns=True, try_now=None, real=None):
        """A lock acquire on ``self`` (which has a ``lock_id``): *target*
        ``(self, *args)`` is the real acquire, true when it got the lock.
        Records ``SYNC <lock id>`` or ``SYNC False``; returns what the real
        one did: a bool, or None when ``returns`` is None (an acquire that
        cannot fail, such as RLock._acquire_restore). ``try_now(self, False)``
        (optional) takes the real lock without blocking, true when it got it
        (``try_now(getattr(self, real), False)`` when *real*, an attribute
        name, is given: try_now can then be the real type's ``acquire``,
        called in C): then a replayed acquire whose SYNC is this thread's
        next event takes the event and the lock together, without a turn
        (`Reader.take_event`)."""
        if self.mode == "record":
            if returns is None:
                rec = F.if_then_else(target, _ID_OF, _ID_OF)
                after = F.compose(F.constantly(None), self._after)
            else:
                rec = F.if_then_else(target, _ID_OF, F.constantly(False))
                after = F.compose(_SUCCEEDED, self._after)
            return RecordGateway(self.gate, rec, None, after, self._error)
        if try_now is None:
            replay = _SyncReplay(self.system, name, on_replay, self.lock_ids, returns)
            return ReplayGateway(self.gate, target, replay)
        # Native: the SYNC and the real lock together when the SYNC is this
        # thread's next event and the lock is free; waits for the thread's
        # turn natively; anything else takes the Python path (_SyncReplay).
        system = self.system
        seq = system._sequencer
        slow = _SyncReplay(system, name, on_replay, self.lock_ids, returns)
        return ReplaySyncGateway(self.gate, target, system.reader.take_event, system._thread_id,
                                 seq.turn, SYNC, try_now, returns, slow, real=real)

    def plain(self, target):
        """A method that is not a sync point (release): the real operation,
        binding ``self`` like a method, in both modes."""
        return ReplayGateway(self.gate, target, target)


_NO_LOCK = object()


class _SyncReplay:
    __slots__ = ("system", "name", "on_replay", "lock_ids", "returns")

    def __init__(self, system, name, on_replay, lock_ids=None, returns=_NO_LOCK):
        self.system = system
        self.name = name
        self.on_replay = on_replay
        self.lock_ids = lock_ids
        self.returns = returns   # lock acquires: what success returns

    def __call__(self, *args, **kwargs):
        system = self.system
        gate = system.gate
        old = gate.swap(DISABLED)
        try:
            on_replay = self.on_replay
            index, tag, value = _read_sync(system, self.name,
                                           reserve=lambda t, v: t == SYNC and v is not False
                                           and on_replay is not None)
            if tag == SYNC:
                if value is False:
                    return False
                if self.returns is not _NO_LOCK:
                    # A lock acquire: the recorded value is the lock's id
                    # (True in recordings made before ids: not checked).
                    mine = args[0].lock_id
                    if value is not True and value != mine:
                        if on_replay is not None:
                            system.sequencer.unreserve()
                        ids = self.lock_ids
                        recorded = ids.describe(value) if ids else f"lock #{value}"
                        ours = ids.describe(mine) if ids else f"lock #{mine}"
                        raise system.diverge(index, f"an acquire of {recorded}",
                                              f"{self.name} of {ours}")
                    value = self.returns
                if on_replay is not None:
                    try:
                        on_replay(*args, **kwargs)
                    finally:
                        system.sequencer.unreserve()
                return value
            if tag == SYNC_ERROR and isinstance(value, BaseException):
                try:
                    raise value      # no local may keep it (see System._replay)
                finally:
                    value = None
            raise system.diverge(index, system.describe_tag(tag, value), self.name)
        finally:
            gate.phase = old


def _read_sync(system, what, reserve=None):
    """One turn: (event index, tag, operand) of this thread's next event.
    When ``reserve(tag, value)`` is true the turn stays reserved for the
    caller (`ThreadSequencer.reserve`) until it calls ``unreserve``."""
    seq = system.take_turn(what)
    try:
        reader = system.reader
        index = event_index(reader)
        try:
            tag = reader.read()
        except EOFError:
            return index, None, None
        try:
            value = reader.read()
        except EOFError:
            return index, tag, None
        if reserve is not None and reserve(tag, value):
            seq.reserve()
        return index, tag, value
    finally:
        seq.release()


def real_wait(system, attempt, what):
    """Run ``attempt(timeout) -> bool`` until it succeeds, watched by the
    replay sequencer's deadlock watchdog (see `ThreadSequencer.wait_real`)."""
    seq = system.sequencer
    if seq is None:
        attempt(-1)
        return
    try:
        seq.wait_real(attempt, what)
    except Deadlock as dead:
        raise system.deadlock(dead) from None
