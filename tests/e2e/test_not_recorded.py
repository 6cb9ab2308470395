"""docs/FIDELITY.md "What is not recorded", kept true: each limit that can
change what the program prints is reported (exit 3) or replays the same
bytes; never exit 0 with other output."""
import pytest

CASES = {
    # Automatic garbage collection runs at other points on replay.
    "gc timing": """
        import gc
        class Node:
            def __init__(self, i):
                self.i = i; self.me = self
            def __del__(self):
                print("collected", self.i)
        for i in range(3000):
            Node(i)
            if i % 500 == 0:
                print("made", i)
    """,
    # ids of objects that cannot be weakly referenced are addresses.
    "id of a list": """
        print(hex(id([])), [1, 2])
    """,
    # a C-level read that is not a boundary call
    "unrecorded read": """
        import _io, random
        print(_io.FileIO("/proc/self/stat").read().split()[0])
    """,
    # pure-Python race between threads (no lock, no event)
    "data race": """
        import threading
        state = {"n": 0}
        def bump():
            for _ in range(20000):
                state["n"] += 1
        ts = [threading.Thread(target=bump) for _ in range(3)]
        for t in ts: t.start()
        for t in ts: t.join()
        print("n", state["n"])
    """,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_limit_is_never_a_silent_wrong_replay(scenario, name):
    s = scenario(CASES[name])
    rec = s.record()
    assert rec.returncode == 0, rec.err
    rep = s.replay()
    assert (rep.returncode == 0 and rep.stdout == rec.stdout) or (
        rep.returncode == 3 and "replay diverged" in rep.err), (name, rec.out, rep.out, rep.err)
