"""Patching a builtin (static, immutable) type through utils.patch_type."""
from __future__ import annotations

import _random
import random

import pytest

from retracesoftware import utils
from retracesoftware.proxy import MemoryReader, MemoryWriter, System

pytestmark = pytest.mark.skipif(not hasattr(utils, "patch_type"),
                                reason="utils.patch_type not available")


def run(system, rng):
    system.patch_type(_random.Random, ["random", "getrandbits"], constructor=False)
    system.bind(rng)
    try:
        return system.run(lambda: [rng.random(), rng.getrandbits(40), rng.random()])
    finally:
        system.unpatch_all()


def test_builtin_random_records_and_replays_without_touching_the_generator():
    rng = random.Random(1234)
    other = random.Random(1234)          # unbound: must keep its real behaviour
    writer = MemoryWriter()
    recorded = run(System("record", writer=writer), rng)
    assert recorded == [other.random(), other.getrandbits(40), other.random()]

    state = rng.getstate()
    replayer = System("replay", reader=MemoryReader(writer))
    assert run(replayer, rng) == recorded
    replayer.finish()
    assert rng.getstate() == state        # the real generator did not advance
    assert type(vars(_random.Random)["random"]).__name__ == "method_descriptor"   # restored


def test_unbound_builtin_instances_pass_through_while_patched():
    writer = MemoryWriter()
    system = System("record", writer=writer)
    system.patch_type(_random.Random, ["random"], constructor=False)
    try:
        a, b = random.Random(7), random.Random(7)
        assert system.run(a.random) == b.random()
    finally:
        system.unpatch_all()
    assert writer.tape == []
