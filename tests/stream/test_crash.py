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
