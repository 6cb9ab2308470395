"""--schedule: thread switches in pure Python replay at the same instruction
(issue 23 item 3; docs/THREADS.md "Recorded thread switches").

The unlocked read-modify-write race: four threads add to one counter with
no lock and a tiny switch interval. A plain replay runs the threads in some
other interleaving (it lost no update where the recording lost some); a
--schedule recording makes every replay lose exactly the updates its
recording lost. --chaos forces switches at random instructions while
recording, so every recording is likely to lose some: the test checks that
some did (or it could not tell a faithful replay from a rerun)."""

import pytest

from retrace_testing import Scenario

RECORDINGS = 5
REPLAYS = 5
N = 400          # 4 x 400 increments: --chaos still loses hundreds (733 of 1600 in one run)
THREADS = 4

RACE = f"""
import sys, threading
sys.setswitchinterval(1e-6)
counter = [0]
def work():
    for _ in range({N}):
        counter[0] = counter[0] + 1
ts = [threading.Thread(target=work) for _ in range({THREADS})]
for t in ts: t.start()
for t in ts: t.join()
print(counter[0])
"""


def test_unlocked_counter_race_replays_exactly(tmp_path):
    s = Scenario(tmp_path, RACE)
    totals = []
    for i in range(RECORDINGS):
        s.recording = tmp_path / f"run{i}.bin"
        rec = s.record(options=("--chaos",))
        assert rec.returncode == 0, rec.err
        assert "retrace: error" not in rec.err, rec.err
        totals.append(int(rec.out))
        for _ in range(REPLAYS):
            rep = s.replay()      # no flag: the mode is in the recording
            assert (rep.returncode, rep.stdout) == (0, rec.stdout), (
                f"record printed {rec.out!r}, replay {rep.out!r}\n{rep.err}")
    # The race really lost updates (else a replay that runs the threads in
    # any order would pass too).
    assert min(totals) < N * THREADS, totals


LOCKS_AND_QUEUES = """
import sys, threading, queue
sys.setswitchinterval(1e-6)
q = queue.Queue()
lock = threading.Lock()
shared = {"n": 0}
out = []
def producer(k):
    for i in range(150):
        q.put((k, i))
        shared["n"] = shared["n"] + 1      # unlocked
def consumer():
    while True:
        item = q.get()
        if item is None:
            break
        with lock:
            out.append(item)
ps = [threading.Thread(target=producer, args=(k,)) for k in range(3)]
c = threading.Thread(target=consumer)
c.start()
for p in ps: p.start()
for p in ps: p.join()
q.put(None)
c.join()
print(shared["n"], out[:5], out[-5:])
"""


def test_schedule_with_locks_queues_and_joins(tmp_path):
    """Recorded switches and the tape's own order (locks, queue, joins,
    thread start-up) together."""
    s = Scenario(tmp_path, LOCKS_AND_QUEUES)
    rec = s.record(options=("--chaos",))
    assert rec.returncode == 0 and "retrace: error" not in rec.err, rec.err
    for _ in range(2):
        rep = s.replay()
        assert (rep.returncode, rep.stdout) == (0, rec.stdout), rep.err


def test_schedule_is_stored_in_the_recording(tmp_path):
    s = Scenario(tmp_path, RACE)
    rec = s.record(options=("--schedule",))
    assert rec.returncode == 0, rec.err
    from retracesoftware.stream import StreamReader
    with StreamReader(str(s.recording)) as reader:
        assert reader.preamble["options"].get("schedule") is True
