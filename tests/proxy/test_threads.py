"""Multi-threaded record/replay: the ThreadSequencer replays the recorded
interleaving of boundary calls."""
from __future__ import annotations

import threading

from retracesoftware.proxy import MemoryReader, MemoryWriter, System, ThreadIds
from retracesoftware.proxy.memory import SWITCH

WORKERS = 4
CALLS = 25


def racing_program(tids, results):
    """Main thread (logical 0) starts 4 workers (logical 1..4) that race on the
    fake clock; each keeps the values it got."""

    def program(world, system):
        tids.set(0)
        start = threading.Barrier(WORKERS)

        def worker(k):
            tids.set(k)

            def body():
                start.wait()           # make them race
                got = [world.time() for _ in range(CALLS)]
                results[k] = got
            system.run(body)

        threads = []
        for k in range(1, WORKERS + 1):
            system.expect_thread(k)   # what install's thread patch does at start()
            threads.append(threading.Thread(target=worker, args=(k,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return world.random()

    return program


def run(mode, world, writer, tids, results):
    kw = {"writer": writer} if mode == "record" else {"reader": MemoryReader(writer)}
    system = System(mode, thread_id=tids, deadlock_timeout=10.0, **kw)
    system.patch(world, "time")
    system.patch(world, "random")
    try:
        last = system.run(racing_program(tids, results), world, system)
        system.finish()
    finally:
        system.unpatch_all()
    return last


def test_four_threads_replay_the_recorded_interleaving(world):
    tids = ThreadIds()
    writer = MemoryWriter(thread_id=tids)
    recorded = {}
    last = run("record", world, writer, tids, recorded)
    switches = [payload for kind, payload in writer.tape if kind == SWITCH]
    assert set(switches) == {0, 1, 2, 3, 4}
    calls_after_record = dict(world.calls)
    assert calls_after_record["time"] == WORKERS * CALLS

    replayed = {}
    assert run("replay", world, writer, tids, replayed) == last
    # Every worker got exactly its recorded values (all distinct), which is
    # only possible if the interleaving replayed.
    assert replayed == recorded
    assert dict(world.calls) == calls_after_record


def test_replay_waits_for_the_recorded_thread_even_if_it_starts_late(world):
    """Record: a worker makes a call before the main thread's call. Replay:
    the main thread reaches its call first and must wait (not diverge, not
    poll) until the worker has made its own."""
    tids = ThreadIds()
    order = []

    def program(world, system, late_start):
        tids.set(0)
        system.expect_thread(1)
        t = threading.Thread(target=lambda: (tids.set(1), order.append(("w", system.run(world.time)))))
        if not late_start:
            t.start()
            t.join()
        else:
            gate = threading.Event()
            threading.Thread(target=lambda: (gate.wait(), t.start())).start()
            gate.set()
        order.append(("main", world.random()))
        if late_start:
            t.join()
        return order

    writer = MemoryWriter(thread_id=tids)
    rec = System("record", writer=writer, thread_id=tids)
    rec.patch(world, "time")
    rec.patch(world, "random")
    try:
        recorded = list(rec.run(program, world, rec, False))
    finally:
        rec.unpatch_all()
    order.clear()
    rep = System("replay", reader=MemoryReader(writer), thread_id=tids, deadlock_timeout=30.0)
    rep.patch(world, "time")
    rep.patch(world, "random")
    try:
        assert rep.run(program, world, rep, True) == recorded
        rep.finish()
    finally:
        rep.unpatch_all()


def test_thread_ids_are_per_thread():
    tids = ThreadIds()
    tids.set("main")
    seen = []
    t = threading.Thread(target=lambda: seen.append(tids()))
    t.start()
    t.join()
    assert tids() == "main" and seen == [0]
