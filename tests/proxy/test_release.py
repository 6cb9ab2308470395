"""Bound objects are released: when one dies, BINDING_DELETE is written and
the System forgets it; replay applies the marker transparently."""
from __future__ import annotations

import _random
import gc
import weakref

import pytest

from retracesoftware.proxy import MemoryReader, MemoryWriter, System
from retracesoftware.proxy.memory import BIND, UNBIND, VALUE


def kinds(writer, kind):
    return [v for k, v in writer.tape if k == kind]


def test_dead_socket_is_unbound_on_the_tape_and_forgotten(roundtrip):
    refs = []
    sizes = []

    def program(world, system):
        sock = world.Socket("a")
        data = sock.recv(4)
        refs.append(weakref.ref(sock))
        sizes.append(len(system._bound))
        del sock                           # last reference: dies here (record)
        sizes.append(len(system._bound))
        return data

    data = roundtrip.record(program)
    assert refs[0]() is None
    assert sizes == [1, 0]
    binds, unbinds = kinds(roundtrip.writer, BIND), kinds(roundtrip.writer, UNBIND)
    assert unbinds == binds[:1]            # the socket's handle
    refs.clear()
    assert roundtrip.replay(program) == data
    # On replay the reader holds the object until it reads the
    # BINDING_DELETE marker (here: at the end of the tape), then lets go.
    assert refs[0]() is None


def test_many_short_lived_objects_do_not_accumulate(roundtrip):
    def program(world, system):
        out = []
        for i in range(200):
            s = world.Socket(str(i))       # addresses get reused across iterations
            out.append(s.recv(1))
        return out, len(system._bound)

    (values, n_bound) = roundtrip.record(program)
    assert n_bound <= 2
    assert len(kinds(roundtrip.writer, UNBIND)) >= 199
    assert roundtrip.replay(program) == (values, n_bound)
    assert roundtrip.replay_calls == {}


def test_external_object_proxy_is_released_with_its_target(roundtrip):
    def program(world, system):
        first = world.opaque()
        a = first.peek(2)
        target = weakref.ref(object.__getattribute__(first, "_retrace_target")) \
            if system.mode == "record" else None
        del first
        alive = target() is not None if target else None
        second = world.opaque()
        return a, alive, second.peek(3), len(system._proxies)

    recorded = roundtrip.record(program)
    assert recorded[1] is False            # the external object went with its proxy
    assert recorded[3] == 1
    replayed = roundtrip.replay(program)
    assert replayed[0] == recorded[0] and replayed[2] == recorded[2]


def test_objects_without_weakref_support_stay_bound():
    writer = MemoryWriter()
    system = System("record", writer=writer)
    system.patch_type(_random.Random, ["random"])
    try:
        def program():
            r = _random.Random(5)          # _random.Random has no __weakref__
            r.random()
            return id(r)
        key = system.run(program)
        gc.collect()
        assert key in system._bound        # held strongly (documented limit)
        assert kinds(writer, UNBIND) == []
    finally:
        system.unpatch_all()


def test_writer_refusing_unbind_mid_write_gets_it_later(world):
    class BusyWriter(MemoryWriter):
        """Like the stream: re-entrant use from inside a write is an error,
        and a garbage collection may run inside a write."""

        def __init__(self):
            super().__init__()
            self.busy = False
            self.collect_next = False

        def write(self, *values):
            self.busy = True
            try:
                if self.collect_next:
                    self.collect_next = False
                    gc.collect()
                super().write(*values)
            finally:
                self.busy = False

        def unbind(self, obj):
            if self.busy:
                raise RuntimeError("re-entrant use of the writer")
            super().unbind(obj)

    writer = BusyWriter()
    system = System("record", writer=writer)
    system.patch_type(world.Socket)
    system.patch(world, "time")
    try:
        def program():
            sock = world.Socket("cyclic")
            sock.recv(1)
            sock.self_ref = sock           # only the GC can free it
            del sock
            writer.collect_next = True
            world.time()                   # the collection runs inside this write
            assert len(system._pending_unbind) == 1
            assert kinds(writer, UNBIND) == []
            world.Socket("next").recv(1)   # next binding retries
            return len(system._pending_unbind)
        gc.disable()
        try:
            assert system.run(program) == 0
        finally:
            gc.enable()
        # The cyclic socket's handle (0), then the one made by "next" (1).
        assert kinds(writer, UNBIND) == [0, 1]
        system.finish()
    finally:
        system.unpatch_all()


def test_with_the_real_stream(tmp_path, world):
    stream = pytest.importorskip("retracesoftware.stream")
    path = tmp_path / "run.bin"

    def program():
        out = []
        for i in range(50):
            s = world.Socket(str(i))
            out.append(s.recv(2))
        return out

    writer = stream.StreamWriter(str(path), {"test": True})
    rec = System("record", writer=writer)
    rec.patch_type(world.Socket)
    try:
        recorded = rec.run(program)
        assert len(rec._bound) <= 2
        rec.finish()
    finally:
        rec.unpatch_all()
        writer.close()
    reader = stream.StreamReader(str(path))
    rep = System("replay", reader=reader)
    rep.patch_type(world.Socket)
    try:
        assert rep.run(program) == recorded
        rep.finish()
    finally:
        rep.unpatch_all()
        reader.close()
