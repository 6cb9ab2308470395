"""``os._exit`` called from a thread other than the main one ends the
recording with its exit call, and the replay ends there with the recorded
exit code (before: the recording had no end — replay exit 4, "the recording
ends early" — or, with the main thread still asking for events, exit 3).

The case of execnet's worker (pytest-xdist), which calls ``os._exit`` from
its receiver thread when told to stop."""
import sys

import pytest

from retrace_testing import assert_faithful

# The main thread keeps making recorded calls while a worker exits the
# process: in the replay it must stop where the recording ends, not ask for
# more events. (It prints nothing: a write racing with os._exit could reach
# the terminal after the recording closed.)
BUSY_MAIN = """
import os, random, sys, threading, time
sys.setswitchinterval(1e-6)
print("start", random.random(), flush=True)
def worker():
    for i in range(50):
        random.random()
    print("worker", random.random(), time.time(), flush=True)
    os._exit(5)
threading.Thread(target=worker).start()
while True:
    random.random()
    time.time()
"""

JOINING_MAIN = """
import os, random, threading
print("start", random.random(), flush=True)
def worker():
    print("worker", random.random(), flush=True)
    os._exit(7)
t = threading.Thread(target=worker)
t.start()
t.join()
print("not reached")
"""


@pytest.mark.parametrize("source, code", [(BUSY_MAIN, 5), (JOINING_MAIN, 7)], ids=["busy-main", "joining-main"])
def test_os_exit_from_a_thread_replays_with_its_exit_code(scenario, source, code):
    s = scenario(source)
    rec = assert_faithful(s, expected_code=code, replays=3)
    assert "not reached" not in rec.out


def test_inspect_sees_the_end_of_a_recording_ended_by_a_thread(scenario):
    s = scenario(BUSY_MAIN)
    rec = s.record()
    assert rec.returncode == 5, rec.err
    from retrace_testing import run
    info = run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording)], s.dir)
    assert info.returncode == 0, info.err
    assert "complete, exit code 5" in info.out, info.out
