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
from dap_client import _assert_none_left, _processes_with


class PtySession:
    """Drive a process on a pseudo-terminal (a tiny pexpect)."""

    def __init__(self, argv, cwd, env=None):
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env or _env(), stdin=slave, stdout=slave,
                                     stderr=slave, close_fds=True)
        os.close(slave)
        self.buffer = b""
        self.all_output = b""

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
                self.all_output += chunk

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


# -- time travel in pdb (issue 18) --------------------------------------------

_TRAVEL = """
    import random
    total = 0
    for i in range(4):
        v = random.randint(1, 10**9)
        total += v
        print("value", i, v)
    print("total", total)
"""


def _ask(session, command):
    session.send(command)
    return session.expect(rb"\(Pdb\) ")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_pdb_time_travel_commands(scenario):
    s = scenario(_TRAVEL)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    values = dict(re.findall(r"value (\d) (\d+)", rec.out))
    session = PtySession([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                          "--pdb"], s.dir)
    try:
        session.expect(rb"\(Pdb\) ")
        _ask(session, "b 6")
        _ask(session, "c")
        _ask(session, "c")
        seen = _ask(session, "p i, v, total")            # iteration 1, at total += v
        assert f"(1, {values['1']}, {values['0']})".encode() in seen, seen
        seen = _ask(session, "info events")
        assert re.search(rb"event \d+ of the recording; thread 0, line event \d+", seen), seen

        seen = _ask(session, "rnext")                     # back over random.randint()
        assert b"app.py(5)" in seen, seen
        seen = _ask(session, "p i, total")
        assert f"(1, {values['0']})".encode() in seen, seen
        seen = _ask(session, "rstep")                     # back into the for line
        assert b"app.py(4)" in seen, seen

        seen = _ask(session, "rcontinue")                 # the previous breakpoint hit
        assert b"app.py(6)" in seen, seen
        seen = _ask(session, "p i, v")
        assert f"(0, {values['0']})".encode() in seen, seen

        seen = _ask(session, "rwatch total")              # where total last changed
        assert b"total changed here" in seen and b"app.py(3)" in seen, seen

        seen = _ask(session, "c")                          # forward again, breakpoints kept
        assert b"app.py(6)" in seen, seen
        seen = _ask(session, "goto 0")                     # back to the start
        seen = _ask(session, "restart")
        assert b"app.py(2)" in seen, seen
        _ask(session, "clear 1")
        session.send("c")
        tail = session.expect(rb"total " + rec.out.split()[-1].encode())
        assert b"retrace: error" not in tail
    finally:
        session.close()
    assert session.proc.returncode == 0
    rep = s.replay()
    assert rep.stdout == rec.stdout and rep.returncode == 0


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_pdb_rwatch_finds_the_change_in_a_loop(scenario):
    s = scenario("""
        import random
        best = None
        for i in range(6):
            x = random.random()
            if best is None or x > best:
                best = x
            print(i, x)
        print("best", best)
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    xs = [float(line.split()[1]) for line in rec.out.splitlines()[:6]]
    last_change = max(i for i in range(6) if xs[i] == max(xs[:i + 1]))
    session = PtySession([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                          "--pdb"], s.dir)
    try:
        session.expect(rb"\(Pdb\) ")
        _ask(session, "b 9")
        _ask(session, "c")
        seen = _ask(session, "rwatch best")
        assert b"best changed here" in seen and b"app.py(7)" in seen, seen
        seen = _ask(session, "p i")
        assert f"\n{last_change}\r".encode() in seen, seen
        _ask(session, "clear app.py:9")
        session.send("c")
        session.expect(rb"best ")
    finally:
        session.close()
    assert session.proc.returncode == 0


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_pdb_breakpoint_in_worker_thread_and_post_mortem(scenario):
    s = scenario("""
        import random, threading
        def worker(n):
            x = random.random()
            print("worker", n, x)
        t = threading.Thread(target=worker, args=(1,))
        t.start()
        t.join()
        raise ValueError("the end")
    """)
    rec = s.record()
    assert rec.returncode == 1, rec.err
    recorded_x = re.search(r"worker 1 (\S+)", rec.out).group(1)
    session = PtySession([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                          "--pdb"], s.dir)
    try:
        session.expect(rb"\(Pdb\) ")
        _ask(session, "b 5")
        seen = _ask(session, "c")
        assert b"[thread 1]" in seen and b"app.py(5)worker()" in seen, seen
        seen = _ask(session, "p x")
        assert recorded_x.encode() in seen, seen
        seen = _ask(session, "rstep")
        assert b"app.py(4)" in seen, seen
        seen = _ask(session, "c")
        seen += _ask(session, "c")          # post-mortem at the uncaught exception
        assert b"Uncaught exception ValueError" in seen and b"app.py(9)" in seen, seen
        assert b"ValueError: the end" in seen                # the traceback, as python prints it
        session.send("c")
    finally:
        session.close()
    assert session.proc.returncode == 1


# -- checkpoints (issue 18: going back resumes a forked checkpoint) -------------

def _checkpoint_counts(seen: bytes):
    m = re.search(rb"resumed from (\d+), re-executions (\d+)", seen)
    assert m, seen
    return int(m.group(1)), int(m.group(2))


_CHECKPOINTED = """
    import random
    total = 0
    for i in range(5):
        v = random.randint(1, 10**9)
        total += v
        print("value", i, v)
    print("total", total)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checkpoints need Linux (prctl)")
def test_pdb_going_back_resumes_checkpoints_and_does_not_repeat_output(scenario):
    s = scenario(_CHECKPOINTED)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    values = dict(re.findall(r"value (\d) (\d+)", rec.out))
    session = PtySession([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                          "--pdb"], s.dir)
    try:
        session.expect(rb"\(Pdb\) ")
        _ask(session, "b 6")
        for _ in range(4):
            seen = _ask(session, "c")                        # the 4th hit: i == 3
        seen = _ask(session, "p i, v")
        assert f"(3, {values['3']})".encode() in seen, seen
        seen = _ask(session, "info checkpoints")
        assert _checkpoint_counts(seen) == (0, 0), seen
        assert b"(start)" in seen, seen

        seen = _ask(session, "rcontinue")                    # back to i == 2
        assert b"app.py(6)" in seen, seen
        seen = _ask(session, "p i, v, total")
        total_before_2 = int(values["0"]) + int(values["1"])
        assert f"(2, {values['2']}, {total_before_2})".encode() in seen, seen
        seen = _ask(session, "rstep")                        # the line before: v's assignment
        seen = _ask(session, "rstep")
        seen = _ask(session, "info checkpoints")
        resumed, reexecuted = _checkpoint_counts(seen)
        assert resumed >= 3 and reexecuted == 0, seen       # every trip back resumed a fork
        seen = _ask(session, "goto 0")                       # back to the start: the start's checkpoint
        assert b"app.py(2)" in seen or b"app.py(1)" in seen, seen
        seen = _ask(session, "info checkpoints")
        assert _checkpoint_counts(seen)[1] == 0, seen
        _ask(session, "clear 1")
        session.send("c")
        session.expect(rb"total " + rec.out.split()[-1].encode())
    finally:
        session.close()
    assert session.proc.returncode == 0
    # Everything the program printed was shown once, in order, though the
    # replay went back over those lines three times.
    everything = re.findall(rb"value \d \d+", session.all_output)
    assert [x.decode() for x in everything] == re.findall(r"value \d \d+", rec.out), session.all_output
    _assert_none_left(str(s.recording))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checkpoints need Linux (prctl)")
def test_killed_debugger_leaves_no_process(scenario):
    import signal
    s = scenario(_CHECKPOINTED)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    session = PtySession([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                          "--pdb"], s.dir)
    try:
        session.expect(rb"\(Pdb\) ")
        _ask(session, "b 6")
        _ask(session, "c")
        _ask(session, "c")
        seen = _ask(session, "rcontinue")             # the supervisor hands over to a fork
        assert b"app.py(6)" in seen, seen
        seen = _ask(session, "info checkpoints")
        assert _checkpoint_counts(seen)[0] >= 1, seen
        assert len(_processes_with(str(s.recording))) >= 3     # supervisor, checkpoints, the active fork
        session.proc.send_signal(signal.SIGKILL)
    finally:
        session.close()
    _assert_none_left(str(s.recording))


_THREADS_IN_TAPE_ORDER = """
    import random, threading, time
    lock = threading.Lock()
    order = []
    def worker(n):
        time.sleep(random.random() / 20)
        with lock:
            order.append(n)
            print("in", n)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("order", order)
"""


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
@pytest.mark.xfail(strict=False, reason="after merging main c684796 the first rcontinue sometimes "
                   "answers with a bare prompt when run with the rest of this file (passes alone); "
                   "not analysed yet (issue 18 note)")
def test_pdb_rcontinue_across_threads_follows_the_tape_order(scenario):
    # The workers enter the lock in a random order when recorded; a replay
    # gives them the lock in the recorded order, so breakpoint hits inside
    # it come in that order, forward and backward (rcontinue).
    s = scenario(_THREADS_IN_TAPE_ORDER)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    recorded = [int(n) for n in re.findall(r"in (\d)", rec.out)]
    assert sorted(recorded) == [0, 1, 2, 3]
    session = PtySession([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                          "--pdb"], s.dir)
    hits = []
    try:
        session.expect(rb"\(Pdb\) ")
        _ask(session, "b 8")
        for _ in range(4):
            seen = _ask(session, "c")
            assert b"app.py(8)worker()" in seen, seen
            hits.append(int(re.search(rb"\n(\d)\r", _ask(session, "p n")).group(1)))
        assert hits == recorded
        back = []
        for _ in range(3):
            seen = _ask(session, "rcontinue")
            assert b"app.py(8)worker()" in seen, seen
            back.append(int(re.search(rb"\n(\d)\r", _ask(session, "p n")).group(1)))
        assert back == recorded[:3][::-1]
        seen = _ask(session, "p order")
        assert repr(recorded[:0]).encode() in seen, seen          # before the first append
        _ask(session, "clear 1")
        session.send("c")
        session.expect(rb"order " + re.escape(repr(recorded).encode()))
    finally:
        session.close()
    assert session.proc.returncode == 0
    rep = s.replay()
    assert rep.stdout == rec.stdout and rep.returncode == 0
