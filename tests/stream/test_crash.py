"""Crash safety: a writer SIGKILLed at random moments leaves a recording that
reads back cleanly up to its last complete frame."""
import os
import random
import signal
import subprocess
import sys

import pytest

from retracesoftware.utils.errors import RecordingFormatError

CHILD = r"""
import sys, importlib
impl = importlib.import_module(sys.argv[1])
w = impl.StreamWriter(sys.argv[2], {"child": True}, thread_id=lambda: 1,
                      flush_interval=0.002, buffer_size=256)
i = 0
while True:
    w.write(i, "event-%d" % (i % 10), [i] * (i % 7))
    if i % 40 == 39:
        w.flush()
        sys.stdout.write("%d\n" % i)
        sys.stdout.flush()
    i += 1
"""


@pytest.mark.parametrize("trial", range(20))
def test_sigkill_leaves_readable_prefix(impl, tmp_path, trial):
    rng = random.Random(trial)
    path = tmp_path / "crash.bin"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, impl.__name__, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        flushed = -1
        for _ in range(rng.randint(1, 30)):
            line = proc.stdout.readline()
            assert line, "child died before being killed"
            flushed = int(line)
        os.kill(proc.pid, signal.SIGKILL)  # lands wherever the child is by now
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    r = impl.StreamReader(path)
    assert r.preamble == {"child": True}
    i = 0
    try:
        while True:
            v = r.read()
            assert v == i
            assert r.read() == "event-%d" % (i % 10)
            assert r.read() == [i] * (i % 7)
            i += 1
    except EOFError:
        pass
    except RecordingFormatError as e:
        assert "torn frame" in str(e)  # never a CRC error or garbage
        assert e.offset < path.stat().st_size
    assert i > flushed  # everything flushed before the kill is there


TERM_CHILD = r"""
import sys, importlib, os, signal, threading
impl = importlib.import_module(sys.argv[1])
w = impl.StreamWriter(sys.argv[2], {"child": True}, thread_id=lambda: 1, flush_interval=60.0)
print(w.flush_on_sigterm(), signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
for i in range(1000):
    w.write(i)
blocked = threading.Lock()
blocked.acquire()
print("ready", flush=True)
blocked.acquire()          # blocked in C for good: only the signal ends it
"""


def test_sigterm_flushes_before_the_process_dies_of_it(impl, tmp_path):
    # C++: the events still buffered (flush_interval 60 s) reach the disk and
    # the process dies of SIGTERM as before, though its main thread is
    # blocked in C. Python backend: nothing armed (it says False).
    path = tmp_path / "term.bin"
    proc = subprocess.Popen([sys.executable, "-c", TERM_CHILD, impl.__name__, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        armed, default = proc.stdout.readline().split()
        assert default == "True"
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGTERM
    assert armed == ("True" if impl.__name__.endswith("_stream") else "False")
    if armed == "True":
        r = impl.StreamReader(path)
        assert [r.read() for _ in range(1000)] == list(range(1000))
