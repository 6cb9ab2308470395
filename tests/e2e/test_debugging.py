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


# -- the debugger is invisible to the replay (issue 18) ----------------------

def _pdb_session(s, commands, expect_end):
    """Replay under --pdb, send *commands* (each after a prompt), then wait
    for *expect_end*; return (output seen, exit code)."""
    session = PtySession([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                          "--pdb"], s.dir)
    seen = b""
    try:
        for command in commands:
            seen += session.expect(rb"\(Pdb\) ")
            session.send(command)
        seen += session.expect(expect_end)
    finally:
        session.close()
    return seen + session.buffer, session.proc.returncode


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_stop_in_function_using_a_thread_pool_replays(scenario):
    # pdb kept the stopped frame's locals (the pool) alive past their
    # recorded death: the exit handler of concurrent.futures then made calls
    # the recording does not have.
    s = scenario("""
        import random
        from concurrent.futures import ThreadPoolExecutor
        def main():
            with ThreadPoolExecutor(max_workers=2) as pool:
                r = list(pool.map(str, [random.random() for _ in range(3)]))
            print(r)
        main()
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    seen, code = _pdb_session(s, ["b app.py:7", "c", "c"], re.escape(rec.stdout.strip()))
    assert code == 0, seen
    assert b"retrace: error" not in seen, seen


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_stop_then_program_formats_a_traceback_replays(scenario):
    # pdb read app.py into linecache; the program's traceback formatting
    # then skipped the reads of app.py the recording has.
    s = scenario("""
        import logging, random
        def risky():
            x = random.random()
            raise ValueError(x)
        try:
            risky()
        except ValueError:
            logging.exception("risky failed")
        print("done")
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    seen, code = _pdb_session(s, ["b risky", "c", "c"], rb"done")
    assert code == 0, seen
    assert b"retrace: error" not in seen, seen
    assert rec.err.splitlines()[-1].encode() in seen


@pytest.mark.skipif(os.environ.get("RETRACE_BACKEND") == "python",
                    reason="the Python backend's gateways are Python frames, in the record's tracebacks too")
def test_program_logging_a_failed_boundary_call_replays(scenario):
    # A replayed exception carried two frames of proxy/system.py: the
    # program's traceback formatting stat()ed that file, a call the
    # recording does not have.
    from retrace_testing import assert_faithful
    s = scenario("""
        import logging, random
        x = random.random()
        try:
            open("/nonexistent-dir/%s" % x)
        except OSError:
            logging.exception("open failed")
        print("done", x)
    """)
    rec = assert_faithful(s)
    rep = s.replay()
    assert rep.stderr == rec.stderr, rep.err
