"""One test per kind of divergence: the message names the event index and both
sides, and the exception carries them as attributes."""
from __future__ import annotations

import os
import threading

import pytest

from retracesoftware.proxy import (MemoryReader, MemoryWriter, ReplayDivergence,
                                   System, ThreadIds)

HERE = os.path.basename(__file__)


def record(world, program, **kw):
    writer = MemoryWriter(thread_id=kw.get("thread_id"))
    system = System("record", writer=writer, **kw)
    for name in ("time", "random", "randint", "call_with", "swallow"):
        system.patch(world, name)
    try:
        system.run(program, world, system)
        system.finish()
    finally:
        system.unpatch_all()
    return writer


def replay(world, writer, program, **kw):
    system = System("replay", reader=MemoryReader(writer), **kw)
    for name in ("time", "random", "randint", "call_with", "swallow"):
        system.patch(world, name)
    try:
        result = system.run(program, world, system)
        system.finish()
        return result
    finally:
        system.unpatch_all()


def test_other_function_called(world):
    writer = record(world, lambda w, s: (w.time(), w.random()))
    with pytest.raises(ReplayDivergence) as info:
        replay(world, writer, lambda w, s: (w.time(), w.randint(1, 2)))
    div = info.value
    # 5 events per call: CALL name fingerprint RESULT value
    assert str(div).splitlines()[0].startswith(
        "replay diverged at event 5: expected call fakeworld.random(), "
        "got call fakeworld.randint(1, 2) (test_divergence.py:")
    assert div.event_index == 5
    assert div.expected == "call fakeworld.random()"
    assert div.actual == "call fakeworld.randint(1, 2)"
    assert any(f[0].endswith(HERE) for f in div.stack)
    assert world.calls["randint"] == 0


def test_same_function_other_arguments(world):
    writer = record(world, lambda w, s: w.randint(1, 6))
    with pytest.raises(ReplayDivergence) as info:
        replay(world, writer, lambda w, s: w.randint(1, 7))
    first = str(info.value).splitlines()[0]
    assert first.startswith("replay diverged at event 0: expected call fakeworld.randint(<args fingerprint 0x")
    assert "got call fakeworld.randint(1, 7) (args fingerprint 0x" in first
    assert info.value.event_index == 0


def test_extra_call_after_the_tape_is_exhausted(world):
    writer = record(world, lambda w, s: w.time())
    with pytest.raises(ReplayDivergence) as info:
        replay(world, writer, lambda w, s: (w.time(), w.random()))
    first = str(info.value).splitlines()[0]
    assert first.startswith("replay diverged at event 5: expected end of recording, "
                            "got call fakeworld.random() (")
    assert world.calls["random"] == 0


def test_missing_call_detected_by_finish(world):
    writer = record(world, lambda w, s: (w.time(), w.random(), w.randint(3, 4)))
    with pytest.raises(ReplayDivergence) as info:
        replay(world, writer, lambda w, s: w.time())
    first = str(info.value).splitlines()[0]
    assert first.startswith("replay diverged at event 5: expected call fakeworld.random(), "
                            "got end of replay (")
    assert info.value.event_index == 5


def test_callback_raised_on_record_returned_on_replay(world):
    flaky = iter([True, False])     # program behaviour that is not recorded

    def program(w, s):
        def cb():
            if next(flaky):
                raise ValueError("first run only")
        return w.swallow(s.callback(cb))

    writer = record(world, program)
    with pytest.raises(ReplayDivergence) as info:
        replay(world, writer, program)
    first = str(info.value).splitlines()[0]
    assert "expected callback" in first and "to raise ValueError('first run only')" in first
    assert "got it returned" in first
    # CALLBACK_DEF name(2) + bind(1) + CALL name fp(3) + CALLBACK cb args kwargs(4)
    # + CALLBACK_ERROR exc(2): the outcome tag sits at event 10
    assert info.value.event_index == 10


def test_callback_returned_on_record_raised_on_replay(world):
    flaky = iter([False, True])

    def program(w, s):
        def cb():
            if next(flaky):
                raise ValueError("second run only")
        return w.swallow(s.callback(cb))

    writer = record(world, program)
    with pytest.raises(ReplayDivergence) as info:
        replay(world, writer, program)
    first = str(info.value).splitlines()[0]
    assert "expected callback" in first and "to return, got it raised ValueError('second run only')" in first


def test_callback_makes_fewer_calls_on_replay(world):
    runs = iter([2, 1])

    def program(w, s):
        def cb(x):
            return sum(w.randint(0, 9) for _ in range(next(runs)))
        return w.call_with(s.callback(cb), 1)

    writer = record(world, program)
    with pytest.raises(ReplayDivergence) as info:
        replay(world, writer, program)
    first = str(info.value).splitlines()[0]
    assert "expected call fakeworld.randint" in first and "got return from callback" in first


def test_divergence_is_sticky(world):
    writer = record(world, lambda w, s: (w.time(), w.random()))
    outcomes = []

    def program(w, s):
        w.time()
        try:
            w.randint(0, 1)
        except ReplayDivergence as exc:
            outcomes.append(exc.event_index)
        try:
            w.random()          # would match, but the replay already failed
        except ReplayDivergence as exc:
            outcomes.append(exc.event_index)

    with pytest.raises(ReplayDivergence):
        replay(world, writer, program)         # finish() re-raises
    assert outcomes == [5, 5]


def test_recorded_stack_is_reported_when_recorded_with_stacks(world):
    def recorded_here(w, s):
        return w.time()

    def replayed_here(w, s):
        return w.random()

    writer = record(world, recorded_here, record_stacks=True)
    with pytest.raises(ReplayDivergence) as info:
        replay(world, writer, replayed_here)
    div = info.value
    assert div.recorded_stack and div.recorded_stack[-1][2] == "recorded_here"
    assert div.stack[-1][2] == "replayed_here"
    text = str(div)
    assert "recorded at:" in text and "in recorded_here" in text and "in replayed_here" in text


def test_recording_with_stacks_replays_faithfully(world):
    writer = record(world, lambda w, s: w.time(), record_stacks=True)
    replay(world, writer, lambda w, s: w.time())


def test_thread_that_never_comes_is_reported_not_hung(world):
    tids = ThreadIds()

    def recorded(w, s):
        tids.set(0)
        s.expect_thread(1)
        t = threading.Thread(target=lambda: (tids.set(1), s.run(w.time)))
        t.start()
        t.join()
        return w.random()

    def replayed(w, s):
        tids.set(0)
        return w.random()        # never starts thread 1: its event blocks the head

    writer = record(world, recorded, thread_id=tids)
    with pytest.raises(ReplayDivergence) as info:
        replay(world, writer, replayed, thread_id=tids, deadlock_timeout=0.2)
    first = str(info.value).splitlines()[0]
    assert "expected thread 1 to take the next event (call " in first, first
    assert "thread 1 never came; thread 0 waits for its turn" in first


def test_extra_call_with_threads_is_reported_at_once(world):
    tids = ThreadIds()
    writer = record(world, lambda w, s: (tids.set(0), w.time()), thread_id=tids)
    with pytest.raises(ReplayDivergence) as info:
        # A hang here would mean the sequencer waits for a tape that has ended.
        replay(world, writer, lambda w, s: (tids.set(0), w.time(), w.random()),
               thread_id=tids, deadlock_timeout=600)
    assert "expected end of recording, got call fakeworld.random()" in str(info.value)
