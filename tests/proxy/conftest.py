"""A fake external world for the proxy tests: a time-like clock, a random-like
generator, a socket-like class with a callback API. Every entry point counts
its calls (so tests can prove replay never runs it) and returns values a rerun
cannot reproduce (os.urandom-based)."""
from __future__ import annotations

import collections
import os
import sys
import types

import pytest

from retracesoftware.proxy import MemoryReader, MemoryWriter, System


def _noise() -> float:
    return int.from_bytes(os.urandom(6), "little") / float(1 << 48)


def make_world(name="fakeworld"):
    world = types.ModuleType(name)
    calls = collections.Counter()
    world.calls = calls

    def time():
        calls["time"] += 1
        return 1_700_000_000.0 + _noise()

    def random():
        calls["random"] += 1
        return _noise()

    def randint(a, b):
        calls["randint"] += 1
        return a + int(_noise() * (b - a + 1))

    def fail(message):
        calls["fail"] += 1
        raise OSError(2, message)

    def outer():
        # External code that itself uses patched entry points (through the
        # module, as real library code would): those nested calls are not
        # boundary crossings.
        calls["outer"] += 1
        return world.time() + world.random()

    def call_with(callback, *args):
        # An external API that calls back into the program.
        calls["call_with"] += 1
        return callback(*args) * 2

    def swallow(callback):
        calls["swallow"] += 1
        try:
            callback()
        except ValueError:
            return "swallowed"
        return "returned"

    class Socket:
        def __init__(self, host):
            calls["Socket.__init__"] += 1
            self.host = host
            self.open = True

        def send(self, data):
            calls["Socket.send"] += 1
            return len(data)

        def recv(self, n):
            calls["Socket.recv"] += 1
            return os.urandom(n)

        def accept(self):
            calls["Socket.accept"] += 1
            peer = Socket.__new__(Socket)
            peer.host = self.host + "-peer"
            peer.open = True
            return peer, ("127.0.0.1", 40000 + int(_noise() * 1000))

        def on_data(self, callback, chunks):
            calls["Socket.on_data"] += 1
            n = 0
            for _ in range(chunks):
                n += callback(os.urandom(4))
            return n

        def fileno(self):
            calls["Socket.fileno"] += 1
            return 3 + int(_noise() * 100)

        def close(self):
            calls["Socket.close"] += 1
            self.open = False

    Socket.__module__ = name
    Socket.__qualname__ = "Socket"

    class Opaque:
        """Returned by `opaque()`: not a tape value, not a patched type."""

        def __init__(self):
            self.secret = _noise()

        def peek(self, k):
            calls["Opaque.peek"] += 1
            return self.secret * k

    Opaque.__module__ = name
    Opaque.__qualname__ = "Opaque"

    def opaque():
        calls["opaque"] += 1
        return Opaque()

    for fn in (time, random, randint, fail, outer, call_with, swallow, opaque):
        fn.__module__ = name
        setattr(world, fn.__name__, fn)
    world.Socket = Socket
    world.Opaque = Opaque
    return world


FUNCTIONS = ("time", "random", "randint", "fail", "outer", "call_with", "swallow", "opaque")


def patch_world(system, world):
    for name in FUNCTIONS:
        system.patch(world, name)
    system.patch_type(world.Socket)
    return system


@pytest.fixture
def world():
    w = make_world()
    sys.modules[w.__name__] = w
    yield w
    sys.modules.pop(w.__name__, None)


class Roundtrip:
    """Record ``program(world, system)`` then replay it, each under its own
    System patched the same way. Keeps both results and call counts."""

    def __init__(self, world):
        self.world = world

    def record(self, program, **system_kw):
        self.writer = MemoryWriter(thread_id=system_kw.get("thread_id"))
        system = patch_world(System("record", writer=self.writer, **system_kw), self.world)
        try:
            self.recorded = system.run(program, self.world, system)
            system.finish()
        finally:
            system.unpatch_all()
        self.record_calls = dict(self.world.calls)
        return self.recorded

    def replay_system(self, **system_kw):
        return patch_world(System("replay", reader=MemoryReader(self.writer), **system_kw), self.world)

    def replay(self, program, **system_kw):
        system = self.replay_system(**system_kw)
        before = dict(self.world.calls)
        try:
            self.replayed = system.run(program, self.world, system)
            system.finish()
        finally:
            system.unpatch_all()
        self.replay_calls = {k: v - before.get(k, 0) for k, v in self.world.calls.items() if v - before.get(k, 0)}
        return self.replayed


@pytest.fixture
def roundtrip(world):
    return Roundtrip(world)
