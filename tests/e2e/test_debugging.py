"""Debugging a replay: pdb is live (its terminal I/O is never taken from the
recording) while the program's data still comes from the recording."""
import os
import re
import select
import subprocess
import sys
import time

import pytest

from retrace_testing import _env


class PtySession:
    """Drive a process on a pseudo-terminal (a tiny pexpect)."""

    def __init__(self, argv, cwd):
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=_env(), stdin=slave, stdout=slave,
                                     stderr=slave, close_fds=True)
        os.close(slave)
        self.buffer = b""

    def expect(self, pattern: bytes, timeout=30.0) -> bytes:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.buffer)
            if match:
                seen, self.buffer = self.buffer[:match.end()], self.buffer[match.end():]
                return seen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; got {self.buffer!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"process ended waiting for {pattern!r}; got {self.buffer!r}")
                self.buffer += chunk

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self):
        try:
            self.proc.wait(timeout=30)
        finally:
            os.close(self.master)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_pdb_on_replay_shows_recorded_values(scenario):
    s = scenario("""
        import time
        t = time.time()
        x = t * 2
        print("value", repr(t))
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    recorded_t = rec.out.split()[-1]
    session = PtySession([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                          "--pdb"], s.dir)
    try:
        session.expect(rb"\(Pdb\) ")
        session.send("b 4")
        session.expect(rb"Breakpoint 1 at .*app\.py:4")
        session.expect(rb"\(Pdb\) ")
        session.send("c")
        session.expect(rb"\(Pdb\) ")
        session.send("p t")
        seen = session.expect(rb"\(Pdb\) ")
        assert recorded_t.encode() in seen, seen
        session.send("c")
        tail = session.expect(rb"value " + re.escape(recorded_t.encode()))
        assert b"retrace: error" not in tail
    finally:
        session.close()
    assert session.proc.returncode == 0


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_breakpoint_in_replayed_program(scenario):
    s = scenario("""
        import time, os
        t = time.time_ns()
        if os.environ.get("STOP_HERE"):
            breakpoint()
        print("done", t)
    """)
    rec = s.record(env={"STOP_HERE": "1", "PYTHONBREAKPOINT": "0"})
    assert rec.returncode == 0, rec.err
    recorded_t = rec.out.split()[-1]
    session = PtySession([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording)],
                         s.dir)
    try:
        session.expect(rb"\(Pdb\) ")
        session.send("p t")
        seen = session.expect(rb"\(Pdb\) ")
        assert recorded_t.encode() in seen, seen
        session.send("c")
        session.expect(rb"done " + recorded_t.encode())
    finally:
        session.close()
    assert session.proc.returncode == 0
