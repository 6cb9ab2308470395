"""Crash safety: a recorded program killed with SIGKILL at random moments.

Every recording must still open; ``inspect`` says where it ends (a clean end
without the exit call, or a torn last frame); replay runs the program up to
that event, prints exactly what the recorded program printed up to there,
and stops with one line and exit code 4 (docs/RELIABILITY.md).

The moment of the kill is chosen by a seeded random number of progress lines
the program has printed (no sleeps): the kill lands wherever the program is
(inside a boundary call, in the writer, between frames).
"""
from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from retrace_testing import _env, run

WORKLOADS = {
    # time + random in one thread
    "single": """
        import time, random
        i = 0
        while True:
            t = time.time()
            r = random.random()
            i += 1
            if i % 300 == 0:
                print(i, t, r, flush=True)
    """,
    # two producer threads and a consumer: the thread schedule is on the tape
    "threads": """
        import queue, random, threading, time
        q = queue.Queue(maxsize=50)
        def producer(n):
            while True:
                q.put((n, time.time()))
        for k in range(2):
            threading.Thread(target=producer, args=(k,), daemon=True).start()
        i = 0
        while True:
            n, t = q.get()
            i += 1
            if i % 200 == 0:
                print(i, n, t, random.random(), flush=True)
    """,
    # files and os.urandom
    "files": """
        import os
        i = 0
        while True:
            with open("data.txt", "w") as f:
                f.write(os.urandom(8).hex())
            with open("data.txt") as f:
                s = f.read()
            i += 1
            if i % 20 == 0:
                print(i, s, flush=True)
    """,
    # a forked child per round; the parent is killed
    "fork": """
        import os, time
        i = 0
        while True:
            pid = os.fork()
            if pid == 0:
                time.time()
                os._exit(7)
            _, status = os.waitpid(pid, 0)
            i += 1
            print(i, os.waitstatus_to_exitcode(status), time.time(), flush=True)
    """,
}

TRIALS = {"single": 7, "threads": 7, "files": 5, "fork": 3}   # 22 kills
DEADLINE = 60.0
NL = b"\n"


def _read_lines_then_kill(proc, wanted: int) -> bytes:
    """Read stdout until *wanted* progress lines arrived, then SIGKILL."""
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + DEADLINE
    try:
        while data.count(b"\n") < wanted:
            left = deadline - time.monotonic()
            assert left > 0, f"the recorded program printed only {data.count(NL)} lines"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    return data + rest


def _trials():
    for name, count in TRIALS.items():
        for k in range(count):
            yield pytest.param(name, k, id=f"{name}-{k}")


@pytest.mark.parametrize("workload,trial", list(_trials()))
def test_sigkill_at_a_random_moment(tmp_path, workload, trial):
    rng = random.Random(f"{workload}-{trial}")
    wanted = rng.randint(1, 25)
    (tmp_path / "app.py").write_text(textwrap.dedent(WORKLOADS[workload]))
    recording = tmp_path / "run.bin"
    proc = subprocess.Popen(
        [sys.executable, "-m", "retracesoftware", "--recording", str(recording), "--", "python", "app.py"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    recorded_out = _read_lines_then_kill(proc, wanted)

    # The recording opens and says where it ends.
    info = run([sys.executable, "-m", "retracesoftware", "inspect", str(recording), "--json"], tmp_path)
    assert info.returncode == 0, info.err
    summary = json.loads(info.out)
    assert summary["complete"] is False
    events = summary["events"]
    reason = summary["damage_reason"]
    assert reason is None or reason.startswith("torn frame"), reason
    human = run([sys.executable, "-m", "retracesoftware", "inspect", str(recording)], tmp_path)
    assert f"ends early at event {events} (" in human.out, human.out

    # Replay runs up to there, then stops: one line, exit code 4.
    rep = run([sys.executable, "-m", "retracesoftware", "--recording", str(recording)], tmp_path,
              timeout=DEADLINE)
    assert rep.returncode == 4, rep.err
    lines = rep.err.splitlines()
    assert len(lines) == 1, rep.err
    expected = "torn frame: " if reason else "the recorded program was killed) — replay stopped there"
    assert re.fullmatch(rf"retrace: error: the recording ends early at event {events} \(.*", lines[0]), lines[0]
    assert expected in lines[0], lines[0]
    # What the replay printed is what the recorded program printed, up to
    # where the tape ends (which may be inside a line: print() writes its
    # pieces one by one when stdout is unbuffered).
    assert rep.stdout == recorded_out[:len(rep.stdout)], (rep.out, recorded_out)


def test_torn_last_frame_replays_up_to_it(scenario):
    s = scenario("""
        import time
        for i in range(3000):
            t = time.time()
            if i % 1000 == 0:
                print(i, t, flush=True)
    """)
    assert s.record().returncode == 0
    data = s.recording.read_bytes()
    s.recording.write_bytes(data[:-5])   # the last frame loses its tail
    info = json.loads(run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording), "--json"],
                          s.dir).out)
    assert info["damage_reason"].startswith("torn frame")
    human = run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording)], s.dir)
    assert f"ends early at event {info['events']} (torn frame" in human.out, human.out
    rep = s.replay()
    assert rep.returncode == 4, rep.err
    assert rep.err == (f"retrace: error: the recording ends early at event {info['events']} (torn frame: "
                       f"the recorded program was killed while its recording was being written) "
                       f"— replay stopped there\n"), rep.err
