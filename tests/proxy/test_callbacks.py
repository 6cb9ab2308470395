"""ext->int callbacks: recorded as CALLBACK, re-run at the same point on replay."""
from __future__ import annotations

from retracesoftware.proxy import MemoryReader, MemoryWriter, System


def test_callbacks_rerun_at_the_recorded_point_with_recorded_args(roundtrip):
    log = []

    def program(world, system):
        def on_chunk(chunk):
            log.append(("chunk", chunk))
            log.append(("nested", world.random()))   # a boundary call inside a callback
            return len(chunk)

        log.append(("before", world.time()))
        sock = world.Socket("h")
        n = sock.on_data(system.callback(on_chunk), 3)
        log.append(("after", world.time()))
        return n

    assert roundtrip.record(program) == 12
    recorded_log = list(log)
    assert [k for k, _ in recorded_log] == ["before", "chunk", "nested", "chunk", "nested",
                                            "chunk", "nested", "after"]
    log.clear()
    assert roundtrip.replay(program) == 12
    assert log == recorded_log          # same args (os.urandom chunks), same order
    assert roundtrip.replay_calls == {}


def test_callback_result_feeds_the_recorded_outcome(roundtrip):
    seen = []

    def program(world, system):
        def double_me(x):
            seen.append(x)
            return x + 1

        return world.call_with(system.callback(double_me), 20)

    assert roundtrip.record(program) == 42
    assert roundtrip.replay(program) == 42
    assert seen == [20, 20]
    assert roundtrip.replay_calls == {}


def test_callback_exception_swallowed_by_external_code_replays(roundtrip):
    runs = []

    def program(world, system):
        def boom():
            runs.append("boom")
            raise ValueError("from the program")

        return world.swallow(system.callback(boom))

    assert roundtrip.record(program) == "swallowed"
    assert roundtrip.replay(program) == "swallowed"
    assert runs == ["boom", "boom"]
    assert roundtrip.replay_calls == {}


def test_callback_exception_propagating_out_replays_as_error(roundtrip):
    def program(world, system):
        def bad(x):
            raise KeyError(x)

        try:
            world.call_with(system.callback(bad), "k")
        except KeyError as exc:
            return exc.args
        return None

    assert roundtrip.record(program) == ("k",)
    assert roundtrip.replay(program) == ("k",)
    assert roundtrip.replay_calls == {}


def test_callback_called_directly_by_the_program_is_not_recorded(world):
    writer = MemoryWriter()
    system = System("record", writer=writer)
    cb = system.run(lambda: system.callback(lambda x: x * 3))
    assert system.run(cb, 5) == 15           # INTERNAL caller: plain call
    assert cb(2) == 6                        # outside retrace: plain call
    assert [v for k, v in writer.tape if k == "value"] == ["CALLBACK_DEF", cb.name]


def test_callback_made_outside_the_program_is_a_plain_wrapper(world):
    writer = MemoryWriter()
    system = System("record", writer=writer)
    system.patch(world, "call_with")
    try:
        cb = system.callback(lambda x: x)     # DISABLED: our runtime's own callback
        assert system.run(world.call_with, cb, 4) == 8
    finally:
        system.unpatch_all()
    assert "CALLBACK" not in [v for k, v in writer.tape if k == "value"]


def test_callback_reading_from_another_system_is_independent(world):
    # Two recordings at once do not mix their tapes.
    w1, w2 = MemoryWriter(), MemoryWriter()
    s1, s2 = System("record", writer=w1), System("record", writer=w2)
    f1 = s1.patch_function(world.time, "t")
    f2 = s2.patch_function(world.random, "r")
    s1.run(f1)
    s2.run(f2)
    r1 = System("replay", reader=MemoryReader(w1))
    assert r1.run(r1.patch_function(world.time, "t")) == [v for k, v in w1.tape][-1]
    r1.finish()
