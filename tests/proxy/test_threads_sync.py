"""Sync points (proxy.thread_order.SyncPoints) and the sequencer's waits outside
the tape: lock acquires replay in recorded order, a real-lock wait that can
never end is reported, and drain() waits for other threads' last events."""
from __future__ import annotations

import _thread
import threading

import pytest

from retracesoftware.proxy import MemoryReader, MemoryWriter, ReplayDivergence, System, ThreadIds
from retracesoftware.proxy.thread_order import SYNC, SyncPoints, real_wait

WORKERS = 4
ROUNDS = 150


def make_lock_class(system):
    """A lock whose acquire is a sync point (what install/recorded_locks.py builds)."""
    sync = SyncPoints(system)
    LT = _thread.LockType

    def on_replay(self_):
        real_wait(system, lambda t: LT.acquire(self_.lock, True, t) if t else LT.acquire(self_.lock, False),
                  "lock.acquire")

    class Lock:
        def __init__(self):
            self.lock = _thread.allocate_lock()
        acquire = sync.method(lambda self_: LT.acquire(self_.lock), "lock.acquire", on_replay)
        release = sync.plain(lambda self_: LT.release(self_.lock))
    return Lock


def program(tids, system, out):
    """4 workers append their number under a recorded lock, racing."""
    Lock = make_lock_class(system)
    lock = Lock()
    start = threading.Barrier(WORKERS)   # real: makes them race

    def worker(k):
        tids.set(k)

        def body():
            start.wait()
            for _ in range(ROUNDS):
                lock.acquire()
                out.append(k)
                lock.release()
        system.run(body)

    threads = []
    for k in range(1, WORKERS + 1):
        system.expect_thread(k)
        threads.append(threading.Thread(target=worker, args=(k,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def record():
    tids = ThreadIds()
    writer = MemoryWriter(thread_id=tids)
    rec = System("record", writer=writer, thread_id=tids)
    recorded = []
    tids.set(0)
    rec.run(program, tids, rec, recorded)
    rec.finish()
    return tids, writer, recorded


def replay(tids, writer, replay_program=program):
    replayed = []
    rep = System("replay", reader=MemoryReader(writer), thread_id=tids, deadlock_timeout=2.0)
    rep.run(replay_program, tids, rep, replayed)
    rep.finish()
    return replayed


def record_and_replay(replay_program=program):
    tids, writer, recorded = record()
    return writer, recorded, replay(tids, writer, replay_program)


def test_acquire_order_replays():
    writer, recorded, replayed = record_and_replay()
    assert len(recorded) == WORKERS * ROUNDS
    assert replayed == recorded
    syncs = [v for kind, v in writer.tape if v == SYNC]
    assert len(syncs) == WORKERS * ROUNDS


def test_recorded_order_is_used_not_a_fresh_one():
    # Five replays of one recording agree with it, although the workers race.
    tids, writer, recorded = record()
    for _ in range(5):
        assert replay(tids, writer) == recorded


def test_real_lock_wait_that_cannot_end_is_a_divergence():
    """Replay: the main thread holds the real lock a worker must take at its
    turn, and then waits for its own turn, which comes after the worker's
    next event: nobody can move. Reported within the timeout, not a hang."""
    tids = ThreadIds()
    writer = MemoryWriter(thread_id=tids)

    def prog(system, mode, errors):
        Lock = make_lock_class(system)
        lock = Lock()
        tick = system.patch_function(lambda: 1, "tick")
        done = threading.Event()

        def worker():
            tids.set(1)
            try:
                system.run(lambda: (lock.acquire(), lock.release(), tick()))
            except ReplayDivergence as exc:
                errors.append(exc)
            done.set()

        system.expect_thread(1)
        if mode == "replay":
            lock.lock.acquire()          # the changed program holds the real lock
        t = threading.Thread(target=worker)
        t.start()
        if mode == "record":
            done.wait()
        try:
            tick()
        except ReplayDivergence as exc:
            errors.append(exc)
        t.join()

    tids.set(0)
    rec = System("record", writer=writer, thread_id=tids)
    rec.run(prog, rec, "record", [])
    errors = []
    rep = System("replay", reader=MemoryReader(writer), thread_id=tids, deadlock_timeout=0.5)
    rep.run(prog, rep, "replay", errors)
    assert errors, "the replay should have diverged"
    message = str(errors[0])
    assert "deadlock" in message and "thread 1 blocks in lock.acquire after its turn" in message, message


def test_drain_waits_for_other_threads_last_events():
    """Record: a worker makes calls after the main thread's last one. Replay:
    drain() (program exit) returns only once the worker consumed them."""
    tids = ThreadIds()
    writer = MemoryWriter(thread_id=tids)
    seen = []

    def prog(system, release_worker):
        tick = system.patch_function(lambda: len(seen), "tick")
        go = threading.Event()

        def worker():
            tids.set(1)
            go.wait()
            system.run(lambda: seen.append([tick() for _ in range(20)]))
        system.expect_thread(1)
        t = threading.Thread(target=worker, daemon=True)
        t.start()
        tick()
        release_worker(go)
        return t

    tids.set(0)
    rec = System("record", writer=writer, thread_id=tids)
    t = rec.run(prog, rec, lambda go: go.set())
    t.join()
    rec.finish()
    seen.clear()
    rep = System("replay", reader=MemoryReader(writer), thread_id=tids, deadlock_timeout=5.0)
    t = rep.run(prog, rep, lambda go: go.set())
    rep._sequencer.drain()
    rep.finish()
    assert len(seen) == 1 and len(seen[0]) == 20


def make_identified_lock_class(system, ids):
    """Like make_lock_class, with lock ids in the SYNC events (SyncPoints.acquire)."""
    sync = SyncPoints(system, ids)
    LT = _thread.LockType

    def on_replay(self_, *a):
        real_wait(system, lambda t: LT.acquire(self_.lock, True, t) if t else LT.acquire(self_.lock, False),
                  "lock.acquire")

    class Lock:
        def __init__(self):
            self.lock = _thread.allocate_lock()
            self.lock_id = ids(1)
        acquire = sync.acquire(lambda self_, *a: LT.acquire(self_.lock, *a), "lock.acquire", on_replay)
        release = sync.plain(lambda self_: LT.release(self_.lock))
    return Lock


def test_lock_ids_are_recorded_and_a_swapped_lock_diverges():
    """SYNC carries the acquired lock's id (False for a failed try); a
    replay that takes another lock where the recording took this one is a
    divergence naming both, not a silent reordering."""
    from retracesoftware.proxy.thread_order import LockIds

    def prog(system, ids, swap):
        Lock = make_identified_lock_class(system, ids)
        a, b = Lock(), Lock()
        assert a.lock_id != b.lock_id
        first, second = (b, a) if swap else (a, b)
        assert first.acquire() is True
        assert second.acquire(False) is True
        assert first.acquire(False) is False      # held: a failed try
        first.release()
        second.release()
        return a.lock_id, b.lock_id

    tids = ThreadIds()
    tids.set(0)
    writer = MemoryWriter(thread_id=tids)
    rec = System("record", writer=writer, thread_id=tids)
    ids = rec.run(prog, rec, LockIds(tids), False)
    rec.finish()
    syncs = [writer.tape[i + 1][1] for i, (kind, v) in enumerate(writer.tape) if v == SYNC]
    assert syncs == [ids[0], ids[1], False]

    rep = System("replay", reader=MemoryReader(writer), thread_id=tids)
    assert rep.run(prog, rep, LockIds(tids), False) == ids
    rep.finish()

    rep = System("replay", reader=MemoryReader(writer), thread_id=tids)
    with pytest.raises(ReplayDivergence) as info:
        rep.run(prog, rep, LockIds(tids), True)
    message = str(info.value)
    assert f"expected an acquire of lock #{ids[0]} (made 1st in test_threads_sync.py:" in message, message
    assert f"got lock.acquire of lock #{ids[1]} (made 2nd in" in message, message


def test_lock_ids_depend_on_thread_site_and_count_not_on_other_sites():
    from retracesoftware.proxy.thread_order import LockIds
    tids = ThreadIds()
    tids.set(0)

    # depth 0: the site is the function that asks (as RecordedLock.__init__
    # asks with depth 1 for its caller).
    def make_here(ids):
        return ids(0)

    def make_elsewhere(ids):
        return ids(0)

    one, two = LockIds(tids), LockIds(tids)
    a = [make_here(one) for _ in range(5)]
    make_elsewhere(two)                 # an extra lock at another site...
    b = [make_here(two) for _ in range(5)]
    assert a == b                       # ...does not shift this site's ids
    assert len(set(a)) > 1
    assert all(0 <= x < 128 for x in a)
