"""TurnState (the replay sequencer's native part) and ReplaySyncGateway,
on both backends: per-thread permits, the hand-over, a lock acquire taken
with its SYNC in one step."""
import _thread
import sys
import threading
import time
import weakref

import pytest


class Probe:
    """A reader's head: .thread and .next_kind (None: the end)."""

    def __init__(self, thread, kind="value"):
        self.thread = thread
        self.next_kind = kind


def test_wake_before_wait_counts_once(u):
    turn = u.TurnState()
    turn.wake(1)
    turn.wake(1)                       # a binary permit: two wakes, one wait
    assert turn.wait(1, 0) is True
    assert turn.wait(1, 0.01) is False


def test_wake_all_and_another_thread(u):
    turn = u.TurnState()
    assert turn.wait("0.1", 0) is False    # makes the permit
    got = []
    t = threading.Thread(target=lambda: got.append(turn.wait("0.1", 30)))
    t.start()
    turn.wake_all()
    t.join()
    assert got == [True]


def test_handover_wakes_the_head_only(u):
    turn = u.TurnState()
    moved = []
    turn.moved = lambda: moved.append(True)
    turn.probe = Probe(2)
    before = turn.changes
    turn.handover()
    assert turn.changes == before + 1
    assert turn.wait(2, 0) is True
    assert turn.wait(3, 0) is False
    assert moved == []
    turn.probe = Probe(2, kind=None)       # the end of the tape: the Python way
    turn.handover()
    assert moved == [True]
    assert turn.wait(2, 0) is False
    turn.draining = 1
    turn.probe = Probe(2)
    turn.handover()
    assert moved == [True, True]


class Lock:
    def __init__(self, lock_id):
        self.lock_id = lock_id
        self._lock = _thread.allocate_lock()

    def release(self):
        self._lock.release()


class Take:
    """take_event over a list of (thread, tag, value): what a reader does."""

    def __init__(self, events):
        self.events = list(events)

    def __call__(self, thread, tag, accept):
        if not self.events:
            return None
        t, g, v = self.events[0]
        if t != thread or g != tag or not accept(v):
            return None
        self.events.pop(0)
        return v, bool(self.events) and self.events[0][0] == thread


def _gateway(u, take, turn, slow, try_now=None):
    gate = u.Gate()
    gate.phase = u.INTERNAL
    if try_now is None:
        try_now = lambda lock, blocking: lock._lock.acquire(blocking)
    return u.ReplaySyncGateway(gate, lambda *a: "target", take, lambda: 0, turn, "SYNC", try_now, True, slow)


def test_sync_gateway_takes_event_and_lock(u):
    turn = u.TurnState()
    take = Take([(0, "SYNC", 7), (0, "SYNC", False), (1, "SYNC", 7)])
    turn.probe = Probe(1)
    slow = lambda *a: "slow"
    gw = _gateway(u, take, turn, slow)
    lock = Lock(7)
    assert gw(lock) is True and lock._lock.locked()
    assert gw(lock) is False               # a recorded failed try: no real acquire
    assert turn.wait(1, 0) is True         # the head left thread 0: thread 1 woken
    lock.release()
    assert gw(lock) == "slow"              # thread 1's event: not ours (native_wait 0)
    assert not lock._lock.locked()


def test_sync_gateway_other_lock_or_busy_lock_is_slow(u):
    turn = u.TurnState()
    gw = _gateway(u, Take([(0, "SYNC", 7)]), turn, lambda *a: "slow")
    assert gw(Lock(8)) == "slow"           # another lock's SYNC: the slow path reports it
    busy = Lock(7)
    busy._lock.acquire()
    assert gw(busy) == "slow"              # held by someone: the slow path waits for it
    turn.closed = 1
    assert gw(Lock(7)) == "slow"


def test_sync_gateway_keeps_no_lock_or_id_alive_between_calls(u):
    # A call keeps no reference to its lock or its lock id (refcounts as
    # before the calls).
    turn = u.TurnState()
    big_id = 10**30                        # not a cached small int
    take = Take([(0, "SYNC", big_id), (0, "SYNC", big_id), (0, "SYNC", 3)])
    gw = _gateway(u, take, turn, lambda *a: "slow")
    first, second = Lock(big_id), Lock(big_id)
    before = (sys.getrefcount(first), sys.getrefcount(second), sys.getrefcount(big_id))
    assert gw(first) is True and gw(second) is True
    # (the two events taken held big_id twice)
    assert (sys.getrefcount(first), sys.getrefcount(second), sys.getrefcount(big_id) + 2) == before
    alive = weakref.ref(first)
    del first
    assert alive() is None
    third = Lock(3)
    assert gw(third) is True and third._lock.locked()


def test_sync_gateway_call_while_another_thread_waits_in_one(u):
    # Thread 0 waits for its turn inside a call (holding that call's accept
    # object) while thread 1 makes its own call: each call checks its own
    # lock; neither leaves a reference behind.
    turn = u.TurnState()
    turn.native_wait = 30.0
    probe = turn.probe = Probe(1)
    events = Take([(1, "SYNC", 9), (1, "SYNC", 5), (0, "SYNC", 4)])
    missed = threading.Event()

    def take(thread, tag, accept):
        got = events(thread, tag, accept)
        if got is None and thread == 0:
            missed.set()                   # thread 0 now waits for its turn
        return got
    ids = {}
    gate = u.Gate()
    gate.phase = u.INTERNAL
    gw = u.ReplaySyncGateway(gate, lambda *a: "target", take, lambda: ids[threading.get_ident()], turn, "SYNC",
                             lambda lock, blocking: lock._lock.acquire(blocking), True, lambda *a: "slow")
    waiting, mine = Lock(4), Lock(5)
    before = (sys.getrefcount(waiting), sys.getrefcount(mine))
    got = []

    def thread0():
        ids[threading.get_ident()] = 0
        gate.phase = u.INTERNAL            # (the phase is per thread)
        got.append(gw(waiting))

    ids[threading.get_ident()] = 1
    assert gw(Lock(9)) is True             # a first call (a gateway keeping state for the next would show)
    t = threading.Thread(target=thread0)
    t.start()
    assert missed.wait(30)
    time.sleep(0.05)                       # (past the check, into the wait)
    probe.thread = 0                       # after our event, the head is thread 0's
    assert gw(mine) is True and mine._lock.locked()
    t.join(30)
    assert got == [True] and waiting._lock.locked() and events.events == []
    assert (sys.getrefcount(waiting), sys.getrefcount(mine)) == before


def test_sync_gateway_with_the_cpp_readers_take_event(u, tmp_path):
    # Given the C++ StreamReader's own take_event, the C++ gateway calls the
    # reader in C (utils/cpp/native_take.h) instead of through Python: the
    # same results, the same real lock state, no reference left behind.
    stream = pytest.importorskip("retracesoftware.stream._stream")
    big_id = 10**30
    ids = {threading.get_ident(): 0}
    p = tmp_path / "sync.bin"
    w = stream.StreamWriter(p, {}, thread_id=lambda: ids[threading.get_ident()], compress=False)
    w.write("SYNC", 7, "SYNC", False, "SYNC", big_id)
    ids[threading.get_ident()] = 1
    w.write("SYNC", 7)
    w.close()
    reader = stream.StreamReader(p)
    turn = u.TurnState()
    turn.probe = reader
    gw = _gateway(u, reader.take_event, turn, lambda *a: "slow")
    assert gw.native is (u.__name__.endswith("._utils"))
    assert _gateway(u, Take([]), turn, lambda *a: "slow").native is False
    lock, big = Lock(7), Lock(big_id)
    before = (sys.getrefcount(lock), sys.getrefcount(big))
    assert gw(lock) is True and lock._lock.locked()
    assert gw(lock) is False                    # a recorded failed try: no real acquire
    assert gw(Lock(8)) == "slow"                # another lock's SYNC: nothing consumed
    assert gw(big) is True and big._lock.locked()
    assert reader.thread == 1 and reader.next_kind == "value"
    lock.release()
    assert gw(lock) == "slow"                   # thread 1's event: not ours
    assert not lock._lock.locked()
    assert (sys.getrefcount(lock), sys.getrefcount(big)) == before


def _real_gateway(u, take, turn, try_now, real="_lock"):
    gate = u.Gate()
    gate.phase = u.INTERNAL
    return u.ReplaySyncGateway(gate, lambda *a: "target", take, lambda: 0, turn, "SYNC", try_now, True,
                               lambda *a: "slow", real=real)


@pytest.mark.parametrize("with_reader", [False, True])
def test_sync_gateway_real_takes_the_attribute_with_the_real_acquire(u, tmp_path, with_reader):
    # real="_lock": try_now gets args[0]._lock; given _thread.lock.acquire
    # itself (the C++ gateway calls it in C with a cached (False,)), the
    # same events, the same real lock states, no reference left behind.
    big_id = 10**30
    events = [(0, "SYNC", 7), (0, "SYNC", False), (0, "SYNC", big_id), (0, "SYNC", 7), (1, "SYNC", 7)]
    turn = u.TurnState()
    if with_reader:
        stream = pytest.importorskip("retracesoftware.stream._stream")
        ids = {threading.get_ident(): 0}
        p = tmp_path / "sync.bin"
        w = stream.StreamWriter(p, {}, thread_id=lambda: ids[threading.get_ident()], compress=False)
        for thread, tag, value in events:
            ids[threading.get_ident()] = thread
            w.write(tag, value)
        w.close()
        take = stream.StreamReader(p)
        turn.probe = take
        take = take.take_event
    else:
        take = Take(events)
        turn.probe = Probe(1)
    gw = _real_gateway(u, take, turn, _thread.LockType.acquire)
    assert gw.real == "_lock" and _gateway(u, take, turn, lambda *a: "slow").real is None
    lock, big = Lock(7), Lock(big_id)
    before = (sys.getrefcount(lock), sys.getrefcount(lock._lock), sys.getrefcount(big._lock))
    assert gw(lock) is True and lock._lock.locked()
    assert gw(lock) is False                    # a recorded failed try: no real acquire
    assert gw(Lock(8)) == "slow"                # another lock's SYNC: nothing consumed
    assert gw(big) is True and big._lock.locked()
    assert gw(lock) == "slow"                   # its real lock is held: the slow path waits
    lock.release()
    assert gw(lock) is True and lock._lock.locked()
    lock.release()
    assert gw(lock) == "slow"                   # thread 1's event: not ours
    assert not lock._lock.locked()
    assert (sys.getrefcount(lock), sys.getrefcount(lock._lock), sys.getrefcount(big._lock)) == before


def test_sync_gateway_real_with_other_callables_and_objects(u):
    turn = u.TurnState()
    seen = []

    def try_now(obj, blocking):
        seen.append((obj, blocking))
        return True
    lock = Lock(7)
    gw = _real_gateway(u, Take([(0, "SYNC", 7)]), turn, try_now)
    assert gw(lock) is True and seen == [(lock._lock, False)]

    # Not a real lock where one is named: the descriptor's own TypeError,
    # as a Python call of _thread.lock.acquire gives it.
    odd = Lock(7)
    odd._lock = threading.RLock()
    gw = _real_gateway(u, Take([(0, "SYNC", 7)]), turn, _thread.LockType.acquire)
    with pytest.raises(TypeError, match="acquire"):
        gw(odd)
    gw = _real_gateway(u, Take([(0, "SYNC", 7)]), turn, _thread.LockType.acquire, real="missing")
    with pytest.raises(AttributeError, match="missing"):
        gw(Lock(7))
    with pytest.raises(TypeError, match="real must be"):
        _real_gateway(u, Take([]), turn, try_now, real=3)
