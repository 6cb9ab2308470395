"""Instances are bound at allocation (patched __new__), not in __init__."""
from __future__ import annotations

import _random
import random

import pytest

from retracesoftware import utils
from retracesoftware.proxy import MemoryReader, MemoryWriter, ReplayDivergence, System
from retracesoftware.proxy.memory import BIND, VALUE
from retracesoftware.proxy.protocol import CALL, NEW


def tape_values(writer):
    return [v for kind, v in writer.tape if kind == VALUE]


def record_random(program):
    writer = MemoryWriter()
    system = System("record", writer=writer)
    system.patch_type(_random.Random, ["random", "getrandbits", "seed"], name="_random.Random")
    try:
        result = system.run(program)
        system.finish()
    finally:
        system.unpatch_all()
    return writer, result


def replay_random(writer, program):
    system = System("replay", reader=MemoryReader(writer))
    system.patch_type(_random.Random, ["random", "getrandbits", "seed"], name="_random.Random")
    try:
        result = system.run(program)
        system.finish()
    finally:
        system.unpatch_all()
    return result


def test_subclass_that_never_calls_base_init_is_bound_and_recorded():
    # random.Random subclasses _random.Random and never calls its __init__:
    # binding in __init__ missed these instances; binding in __new__ does not.
    def program():
        r = random.Random()            # seeded from the OS (a recorded seed() call)
        return [r.random(), r.getrandbits(64), r.random()]

    writer, recorded = record_random(program)
    values = tape_values(writer)
    assert values[:2] == [NEW, "random.Random"]
    assert [values[i + 1] for i, v in enumerate(values) if v == CALL] == [
        "_random.Random.seed", "_random.Random.random", "_random.Random.getrandbits", "_random.Random.random"]
    assert replay_random(writer, program) == recorded
    # A fresh OS-seeded generator gives other numbers: the replay really
    # used the tape.
    assert program() != recorded


def test_replay_runs_the_real_allocation_but_not_the_recorded_calls():
    def program():
        r = random.Random(42)
        return r, r.random()

    writer, (_, recorded) = record_random(program)
    rng, replayed = replay_random(writer, program)
    assert replayed == recorded
    assert type(rng) is random.Random
    # seed(42) was replayed, not run: the real generator was never seeded.
    assert rng.getstate() != random.Random(42).getstate()


def test_objects_made_by_the_runtime_or_inside_external_calls_are_not_bound(world):
    writer = MemoryWriter()
    system = System("record", writer=writer)
    system.patch_type(world.Socket)
    made_outside = []

    def external():                   # external code creating a Socket
        made_outside.append(world.Socket.__new__(world.Socket))
        return 1

    wrapped = system.patch_function(external, "fakeworld.external")
    try:
        disabled = world.Socket("runtime")             # DISABLED: our runtime
        system.run(wrapped)
        assert not system.is_bound(disabled)
        assert not system.is_bound(made_outside[0])
        assert NEW not in tape_values(writer)
        made_inside = system.run(world.Socket, "program")
        assert system.is_bound(made_inside)
    finally:
        system.unpatch_all()
    assert tape_values(writer).count(NEW) == 1


def test_init_is_an_ordinary_boundary_method(roundtrip):
    def program(world, system):
        sock = world.Socket("host")
        return sock.recv(3)

    recorded = roundtrip.record(program)
    values = tape_values(roundtrip.writer)
    new_at = values.index(NEW)
    assert values[new_at + 1] == "fakeworld.Socket"
    assert values[new_at + 2:new_at + 4] == [CALL, "fakeworld.Socket.__init__"]
    assert roundtrip.record_calls["Socket.__init__"] == 1
    assert roundtrip.replay(program) == recorded
    assert "Socket.__init__" not in roundtrip.replay_calls


def test_replay_checks_the_allocated_type(roundtrip):
    class Other:
        pass

    def program(world, system):
        return world.Socket("a").recv(2)

    roundtrip.record(program)

    def changed(world, system):
        class Sub(world.Socket):
            pass
        return Sub("a").recv(2)

    with pytest.raises(ReplayDivergence) as info:
        roundtrip.replay(changed)
    assert "expected new fakeworld.Socket object" in str(info.value)
    assert "got new " in str(info.value) and "Sub object" in str(info.value)


def test_unbound_method_path_and_after_unpatch_instantiation_work(world):
    system = System("record", writer=MemoryWriter())
    system.patch_type(_random.Random, ["random"])
    system.patch_type(world.Socket)
    system.unpatch_all()
    assert random.Random(3).random() == _random.Random(3).random()
    assert world.Socket("x").host == "x"
    assert "__new__" not in world.Socket.__dict__


def test_patched_methods_are_native_method_gateways(world):
    system = System("record", writer=MemoryWriter())
    system.patch_type(world.Socket)
    try:
        gw = world.Socket.__dict__["send"]
        assert type(gw) is utils.MethodGateway
        assert gw.bound is system._bound
        assert type(world.Socket.__dict__["__new__"]) is utils.NewGateway
    finally:
        system.unpatch_all()


def test_binding_on_the_tape_is_where_the_object_was_made(roundtrip):
    def program(world, system):
        t = world.time()
        sock = world.Socket("h")
        return t, sock.send(b"x")

    roundtrip.record(program)
    kinds = [(k, v) for k, v in roundtrip.writer.tape if k in (VALUE, BIND)]
    values = [v for _, v in kinds]
    new_at = values.index(NEW)
    # CALL fakeworld.time <fp> RESULT <t> NEW fakeworld.Socket <B> CALL ...__init__
    assert values[new_at - 5:new_at - 3] == [CALL, "fakeworld.time"] and values[new_at - 2] == "RESULT"
    assert kinds[new_at + 2][0] == BIND
