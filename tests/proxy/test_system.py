"""Record then replay programs against the fake world (conftest.py)."""
from __future__ import annotations

import pytest

from retracesoftware import utils
from retracesoftware.proxy import (ExternalObject, MemoryReader, MemoryWriter,
                                   ReplayDivergence, System)
from retracesoftware.proxy.memory import VALUE
from retracesoftware.proxy.protocol import CALL


def calls_on_tape(writer):
    """The names of the CALL events of a MemoryWriter tape, in order."""
    values = [v for kind, v in writer.tape if kind == VALUE]
    return [values[i + 1] for i, v in enumerate(values) if v == CALL]


def test_functions_replay_recorded_values_without_calling_the_world(roundtrip):
    def program(world, system):
        return [world.time(), world.random(), world.randint(1, 6), world.time()]

    recorded = roundtrip.record(program)
    assert roundtrip.record_calls == {"time": 2, "random": 1, "randint": 1}
    replayed = roundtrip.replay(program)
    assert replayed == recorded
    assert roundtrip.replay_calls == {}
    assert calls_on_tape(roundtrip.writer) == [
        "fakeworld.time", "fakeworld.random", "fakeworld.randint", "fakeworld.time"]


def test_plain_run_differs_so_the_world_really_is_nondeterministic(world):
    assert world.time() != world.time()


def test_nested_calls_inside_an_external_call_are_not_recorded(roundtrip):
    def program(world, system):
        return world.outer()

    recorded = roundtrip.record(program)
    assert roundtrip.record_calls == {"outer": 1, "time": 1, "random": 1}
    assert calls_on_tape(roundtrip.writer) == ["fakeworld.outer"]
    assert roundtrip.replay(program) == recorded
    assert roundtrip.replay_calls == {}


def test_sockets_created_used_and_accepted_replay_without_real_sockets(roundtrip):
    def program(world, system):
        sock = world.Socket("example.org")
        sent = sock.send(b"hello")
        data = sock.recv(8)
        peer, addr = sock.accept()
        peer_data = peer.recv(4)
        fd = peer.fileno()
        again = sock.recv(2)
        peer.close()
        sock.close()
        return sent, data, type(peer).__name__, addr, peer_data, fd, again

    recorded = roundtrip.record(program)
    assert roundtrip.record_calls["Socket.__init__"] == 1
    replayed = roundtrip.replay(program)
    assert replayed == recorded
    assert roundtrip.replay_calls == {}


def test_replayed_socket_is_a_stub_without_real_state(roundtrip):
    def program(world, system):
        sock = world.Socket("example.org")
        peer, _ = sock.accept()
        return sock, peer

    rec_sock, rec_peer = roundtrip.record(program)
    assert rec_sock.host == "example.org" and rec_peer.host == "example.org-peer"
    rep_sock, rep_peer = roundtrip.replay(program)
    assert type(rep_sock) is roundtrip.world.Socket and type(rep_peer) is roundtrip.world.Socket
    # Neither the constructor nor accept() ran: the objects carry no state.
    assert not hasattr(rep_sock, "host") and not hasattr(rep_peer, "host")


def test_same_object_returned_twice_is_the_same_object_on_replay(roundtrip):
    world = roundtrip.world
    world.Socket.me = lambda self: self   # an external method returning self

    def program(world, system):
        sock = world.Socket("a")
        return sock.me() is sock, sock.accept()[0].me() is not sock

    try:
        patch = roundtrip.world.Socket
        assert roundtrip.record(lambda w, s: (s.patch_type(patch, ["me"], constructor=False), program(w, s))[1]) == (True, True)
        assert roundtrip.replay(lambda w, s: (s.patch_type(patch, ["me"], constructor=False), program(w, s))[1]) == (True, True)
        assert roundtrip.replay_calls == {}
    finally:
        del world.Socket.me


def test_external_exceptions_replay_as_same_type_and_args(roundtrip):
    def program(world, system):
        try:
            world.fail("no such file")
        except OSError as exc:
            return type(exc), exc.args, exc.errno, exc.strerror
        return None

    recorded = roundtrip.record(program)
    assert recorded == (FileNotFoundError, (2, "no such file"), 2, "no such file")
    assert roundtrip.replay(program) == recorded
    assert roundtrip.replay_calls == {}


def test_user_exceptions_pass_through_untouched(world):
    class Mine(Exception):
        pass

    mine = Mine("user bug")
    system = System("record", writer=MemoryWriter())
    system.patch(world, "time")

    def program():
        world.time()
        raise mine

    try:
        with pytest.raises(Mine) as info:
            system.run(program)
        assert info.value is mine
        assert system.gate.phase == utils.DISABLED
    finally:
        system.unpatch_all()


def test_unbound_instances_use_the_real_methods_in_both_modes(roundtrip, world):
    early = world.Socket("made-before-install")   # e.g. sys.stdout's file object

    def program(world, system):
        return early.send(b"abc"), early.recv(3) == early.recv(3)

    roundtrip.record(program)
    assert roundtrip.record_calls["Socket.send"] == 1
    assert calls_on_tape(roundtrip.writer) == []
    roundtrip.replay(program)
    assert roundtrip.replay_calls == {"Socket.send": 1, "Socket.recv": 2}


def test_bind_makes_an_existing_object_external(world):
    early = world.Socket("singleton")   # like random._inst

    def program():
        return early.recv(4), early.send(b"xy")

    writer = MemoryWriter()
    rec = System("record", writer=writer)
    rec.patch_type(world.Socket)
    rec.bind(early)
    try:
        recorded = rec.run(program)
    finally:
        rec.unpatch_all()
    rep = System("replay", reader=MemoryReader(writer))
    rep.patch_type(world.Socket)
    rep.bind(early)
    before = dict(world.calls)
    try:
        assert rep.run(program) == recorded
        rep.finish()
    finally:
        rep.unpatch_all()
    assert dict(world.calls) == before


def test_untransportable_result_becomes_an_external_object(roundtrip):
    def program(world, system):
        obj = world.opaque()
        return type(obj).__name__, repr(obj), obj.peek(2), obj.peek(3)

    recorded = roundtrip.record(program)
    assert recorded[0] == "ExternalObject"
    assert recorded[1] == "<external fakeworld.Opaque object>"
    assert roundtrip.replay(program) == recorded
    assert roundtrip.replay_calls == {}


def test_python_subclass_overrides_stay_internal(roundtrip):
    log = []

    def program(world, system):
        class Loud(world.Socket):
            def send(self, data):
                log.append(data)            # program code: runs in both modes
                return super().send(data.upper()) + 100

        sock = Loud("h")
        return sock.send(b"ab"), sock.recv(2)

    recorded = roundtrip.record(program)
    assert recorded[0] == 102
    replayed = roundtrip.replay(program)
    assert replayed == recorded
    assert log == [b"ab", b"ab"]
    assert roundtrip.replay_calls == {}


def test_results_are_copied_so_later_mutation_does_not_change_the_tape(roundtrip):
    world = roundtrip.world
    shared = [1, 2]

    def listing():
        world.calls["listing"] += 1
        return shared

    world.listing = listing

    def program(world, system):
        system.patch(world, "listing", "fakeworld.listing")
        got = world.listing()
        got.append(3)
        return list(got)

    assert roundtrip.record(program) == [1, 2, 3]
    shared.append(99)
    assert roundtrip.replay(program) == [1, 2, 3]


def test_unpatch_all_restores_everything(world):
    originals = {name: getattr(world, name) for name in ("time", "random")}
    send = world.Socket.__dict__["send"]
    had_init = "__init__" in world.Socket.__dict__
    init = world.Socket.__dict__.get("__init__")
    system = System("record", writer=MemoryWriter())
    system.patch(world, "time")
    system.patch(world, "random")
    system.patch_type(world.Socket)
    assert world.time is not originals["time"]
    assert world.Socket.__dict__["send"] is not send
    system.unpatch_all()
    assert {name: getattr(world, name) for name in ("time", "random")} == originals
    assert world.Socket.__dict__["send"] is send
    assert ("__init__" in world.Socket.__dict__) == had_init
    assert world.Socket.__dict__.get("__init__") is init


def test_disable_for_runs_real_and_unrecorded(world):
    writer = MemoryWriter()
    system = System("record", writer=writer)
    system.patch(world, "time")
    try:
        real_time = system.disable_for(world.time)
        system.run(real_time)
        assert world.calls["time"] == 1
        assert calls_on_tape(writer) == []
        phases = system.run(system.disable_for(lambda: system.gate.phase))
        assert phases == utils.DISABLED
    finally:
        system.unpatch_all()


def test_calls_outside_run_are_not_recorded_or_replayed(world):
    writer = MemoryWriter()
    system = System("record", writer=writer)
    system.patch(world, "time")
    try:
        world.time()
    finally:
        system.unpatch_all()
    assert writer.tape == []
    assert world.calls["time"] == 1


def test_enable_context_manager_records(world):
    writer = MemoryWriter()
    system = System("record", writer=writer)
    system.patch(world, "random")
    try:
        with system.enable():
            assert system.gate.phase == utils.INTERNAL
            world.random()
        assert system.gate.phase == utils.DISABLED
    finally:
        system.unpatch_all()
    assert calls_on_tape(writer) == ["fakeworld.random"]


def test_patch_function_keeps_identity_by_name_not_patch_order(world):
    writer = MemoryWriter()
    rec = System("record", writer=writer)
    t, r = rec.patch_function(world.time), rec.patch_function(world.random)
    values = rec.run(lambda: (t(), r()))
    rep = System("replay", reader=MemoryReader(writer))
    r2, t2 = rep.patch_function(world.random), rep.patch_function(world.time)  # other order
    assert rep.run(lambda: (t2(), r2())) == values
    rep.finish()


def test_memory_writer_refuses_what_the_stream_cannot_carry():
    writer = MemoryWriter()
    with pytest.raises(TypeError, match="cannot encode"):
        writer.write(object())
    assert writer.tape == []


def test_structseq_and_containers_round_trip():
    import os
    import time as _time
    st = os.stat(".")
    values = [None, True, 3, 2**80, 1.5, "s", b"b", (1, [2, {3: 4}]), {1, 2}, frozenset({5}),
              st, _time.gmtime(0), ValueError("x", 1)]
    writer = MemoryWriter()
    writer.write(*values)
    reader = MemoryReader(writer)
    got = [reader.read() for _ in values]
    assert got[:-1] == values[:-1]
    assert type(got[10]) is os.stat_result and got[10].st_mtime == st.st_mtime
    assert type(got[-1]) is ValueError and got[-1].args == ("x", 1)
    with pytest.raises(EOFError):
        reader.read()


def test_divergence_is_a_retrace_error():
    from retracesoftware.utils.errors import RetraceError
    assert issubclass(ReplayDivergence, RetraceError)
    assert ReplayDivergence.exit_code == 3


def test_external_object_type_is_per_system():
    a = System("record", writer=MemoryWriter())
    b = System("record", writer=MemoryWriter())
    assert a._external_type is not b._external_type
    assert issubclass(a._external_type, ExternalObject)


def test_memory_tape_errors_match_the_stream_contract():
    class Thing:
        pass

    thing = Thing()
    writer = MemoryWriter()
    with pytest.raises(TypeError):
        writer.bind(3)
    writer.bind(thing)
    with pytest.raises(ValueError):
        writer.bind(thing)
    writer.write("tag", thing, [thing])
    writer.unbind(thing)
    with pytest.raises(KeyError):
        writer.unbind(thing)
    reader = MemoryReader(writer)
    assert reader.next_kind == "binding"
    with pytest.raises(ValueError):
        reader.read()
    mine = Thing()
    reader.bind(mine)
    with pytest.raises(ValueError):
        reader.bind(Thing())
    assert reader.read() == "tag"
    assert reader.read() is mine
    assert reader.read() == [mine]
    assert reader.next_kind is None and reader.position == 4
