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


def test_program_settings_keep_their_meaning(scenario):
    # gc.disable() turns automatic collection off (nothing is collected
    # until the program's gc.collect()), thresholds read back as set, and
    # what collect() and get_count() return replays.
    s = scenario(PRELUDE + """
class Loud(Node):
    def __del__(self):
        print("del", self.i)
gc.disable()
print("enabled", gc.isenabled())
for i in range(1500):
    Loud(i)
    time.time()
print("collect", gc.collect() >= 1500, gc.get_count()[0] < 100)
gc.enable()
gc.set_threshold(300, 5)
print("threshold", gc.get_threshold(), gc.isenabled())
for i in range(1500, 2500):
    Loud(i)
    time.time()
    if i % 250 == 0:
        print("made", i)
""")
    rec = assert_faithful(s)
    out = rec.stdout.decode()
    assert "enabled False" in out and "threshold (300, 5, 10) True" in out
    # nothing collected while disabled: the first del comes after collect()
    lines = out.splitlines()
    assert lines.index("collect True True") > max(i for i, l in enumerate(lines) if l.startswith("del ") and int(l[4:]) < 1500)
    assert not any(l.startswith("del ") for l in lines[:lines.index("enabled False") + 1])


def test_long_pure_python_stretch_is_bounded_and_never_silent(scenario):
    # 120,000 cycles and no boundary call: the interpreter's automatic
    # collection (the safety valve) runs between events on record. The
    # replay prints the same or stops with exit 3; never other output.
    s = scenario("""
import gc, random
class Node:
    def __init__(self, i):
        self.i = i; self.me = self
    def __del__(self):
        if self.i % 30000 == 0:
            print("del", self.i)
print("start", random.random() < 2)
for i in range(120000):
    Node(i)
print("end", gc.isenabled())
""")
    rec = s.record()
    assert rec.returncode == 0, rec.err
    assert rec.stdout.count(b"del ") >= 2       # collected on record: memory stayed bounded
    rep = s.replay()
    assert (rep.returncode == 0 and rep.stdout == rec.stdout) or (
        rep.returncode == 3 and "replay diverged" in rep.err), (rep.out, rep.err)
