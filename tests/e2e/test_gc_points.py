"""Garbage collections run at recorded points (install/gc_points.py): what
finalizers, weakref callbacks and gc.callbacks print replays byte for byte.

Each program allocates a random number of live objects first, so the
allocation counter (and with it where a plain run collects) differs from
run to run: plain runs print the collections at other lines."""
import pytest

from retrace_testing import assert_faithful

PRELUDE = """
import gc, random, time, weakref
keep = [[] for _ in range(random.randrange(2000))]
print("kept", len(keep))
class Node:
    def __init__(self, i):
        self.i = i
        self.me = self
"""

PROGRAMS = {
    "del": PRELUDE + """
class Loud(Node):
    def __del__(self):
        print("del", self.i)
for i in range(3000):
    Loud(i)
    time.time()
    if i % 250 == 0:
        print("made", i)
""",
    "finalize": PRELUDE + """
for i in range(3000):
    n = Node(i)
    weakref.finalize(n, print, "finalized", i)
    del n
    time.time()
    if i % 250 == 0:
        print("made", i)
""",
    "callbacks": PRELUDE + """
def show(phase, info):
    print(phase, info["generation"], info.get("collected"))
gc.callbacks.append(show)
for i in range(3000):
    Node(i)
    time.time()
    if i % 250 == 0:
        print("made", i)
gc.callbacks.remove(show)
""",
    "weakref callback": PRELUDE + """
refs = set()
for i in range(3000):
    n = Node(i)
    refs.add(weakref.ref(n, lambda r, i=i: print("gone", i)))
    del n
    time.time()
    if i % 250 == 0:
        print("made", i)
""",
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_collections_replay_at_their_points(scenario, name):
    assert_faithful(scenario(PROGRAMS[name]))


def test_without_recorded_points_the_replay_differs(scenario):
    # The same program recorded with automatic collection left to the
    # interpreter: its replay does not print the same (or says so, exit 3).
    s = scenario(PROGRAMS["del"])
    rec = s.record(env={"RETRACE_NO_GC_POINTS": "1"})
    assert rec.returncode == 0, rec.err
    rep = s.replay()
    assert rep.stdout != rec.stdout or rep.returncode == 3, rep.err
