"""A CI failure on a laptop (issue 20): ``pytest --retrace-record`` in "CI",
then ``python -m retracesoftware --recording PATH --test NODEID [--pdb]`` in
another checkout of the project.

The project has three test files; one test fails only for some random and
time values, so the session is recorded until it fails (bounded). The
replay of that test in a copy of the project at another path (the original
removed) prints the failure section byte for byte as pytest printed it and
exits with pytest's exit code; with ``--pdb`` through a pty the debugger
stops in the test and shows a local that came from the recording.
"""
from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest

from retrace_testing import run

PROJECT = {
    "pytest.ini": "[pytest]\naddopts = -p no:cacheprovider\n",
    "conftest.py": "",
    "test_math.py": """\
def test_add():
    assert 1 + 1 == 2


def test_mul():
    assert 6 * 7 == 42
""",
    "test_text.py": """\
def test_upper():
    assert "ci".upper() == "CI"
""",
    "test_flaky.py": """\
import random
import time


def test_lucky():
    value = random.randint(0, 99)
    started = time.time()
    assert value >= 50 or started < 0, f"unlucky value {value}"
""",
}
NODEID = "test_flaky.py::test_lucky"
#: pytest's default (long) tracebacks: their source lookups run outside the
#: recording (issue 19), so the failure section replays byte for byte.
TB = []
TRIES = 12   # a session fails with probability 1/2: 12 passes in a row is 1 in 4096


def _make_project(root: Path) -> Path:
    root.mkdir()
    for name, text in PROJECT.items():
        (root / name).write_text(text)
    return root


def _section(text: str, nodeid: str) -> str | None:
    from retracesoftware.test_replay import extract_section
    return extract_section(text, nodeid)


def _record_until_failure(project: Path, recording: Path, *extra):
    passed_left_nothing = None
    for _ in range(TRIES):
        result = run([sys.executable, "-m", "pytest", "-q", *TB, *extra, "--retrace-record", str(recording) + os.sep],
                     project)
        if result.returncode == 0:
            passed_left_nothing = not recording.exists() or not any(recording.iterdir())
            continue
        return result, passed_left_nothing
    pytest.fail(f"the flaky test passed {TRIES} sessions in a row")


def _replay_command(output: str) -> list[str]:
    lines = [line for line in output.splitlines() if line.startswith("python -m retracesoftware ")]
    assert len(lines) == 1, output
    words = shlex.split(lines[0].replace("  [--pdb]", ""))
    return [sys.executable, *words[1:]]


def _pty_session(argv, cwd, commands, timeout=60) -> tuple[str, int]:
    import pty
    pid, fd = pty.fork()
    if pid == 0:   # pragma: no cover - the child
        os.chdir(cwd)
        os.execv(argv[0], argv)
    out = b""
    deadline = time.monotonic() + timeout

    def read_until(token: bytes, count: int = 1) -> bool:
        nonlocal out
        while out.count(token) < count and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return False
                if not data:
                    return False
                out += data
        return out.count(token) >= count

    for n, command in enumerate(commands, 1):
        if not read_until(b"(Pdb) ", n):
            break
        os.write(fd, command + b"\n")
    read_until(b"\0")   # to the end of the replay
    _, status = os.waitpid(pid, 0)
    return out.decode("utf-8", "replace"), os.waitstatus_to_exitcode(status)


def _check_replay(tmp_path, recorded, command):
    section = _section(recorded.out, NODEID)
    assert section and "unlucky value" in section, recorded.out
    value = re.search(r"unlucky value (\d+)", section).group(1)
    # Another checkout of the same sources at another path; the original is gone.
    moved = tmp_path / "laptop" / "checkout"
    shutil.copytree(tmp_path / "ci", moved)
    shutil.rmtree(tmp_path / "ci")
    replayed = run(command, moved)
    assert replayed.returncode == recorded.returncode == 1, replayed.err
    assert replayed.out == section, replayed.err
    # --pdb: stops in the test; `value` comes from the recording.
    transcript, code = _pty_session(command + ["--pdb"], moved, [b"n", b"p value", b"c"])
    assert "test_flaky.py(6)test_lucky()" in transcript, transcript
    assert f"p value\r\n{value}\r\n" in transcript, transcript
    assert code == 1, transcript


def test_ci_failure_replays_one_test_in_another_checkout(tmp_path):
    project = _make_project(tmp_path / "ci")
    recording = tmp_path / "artifacts"
    recorded, passed_left_nothing = _record_until_failure(project, recording)
    assert passed_left_nothing in (None, True)
    assert (recording / "session.bin").exists()
    assert "retrace: session recording kept" in recorded.err
    command = _replay_command(recorded.out)
    assert command[-2:] == ["--test", NODEID]
    _check_replay(tmp_path, recorded, command)


def test_a_passing_session_leaves_nothing_and_inspect_lists_tests(tmp_path):
    project = _make_project(tmp_path / "ci")
    recording = tmp_path / "rec.bin"
    passed = run([sys.executable, "-m", "pytest", "-q", "test_math.py", "--retrace-record", str(recording)],
                 project)
    assert passed.returncode == 0, passed.out + passed.err
    assert not recording.exists()
    kept = run([sys.executable, "-m", "pytest", "-q", "test_math.py", "--retrace-record", str(recording),
                "--retrace-keep", "always"], project)
    assert kept.returncode == 0 and recording.exists(), kept.err
    listed = run([sys.executable, "-m", "retracesoftware", "inspect", str(recording)], project)
    assert listed.returncode == 0, listed.err
    assert "test_math.py::test_add  passed" in listed.out and "test_math.py::test_mul  passed" in listed.out
    missing = run([sys.executable, "-m", "retracesoftware", "--recording", str(recording),
                   "--test", "test_math.py::test_nope"], project)
    assert missing.returncode == 2 and "has no test test_math.py::test_nope" in missing.err


@pytest.mark.slow
# Under load the worker recordings ended early: execnet's worker, told to
# terminate, gives its session 5 + 10 s, then os._exit(1) from its receiver
# thread (install/pytest_session.py _patient_execnet_worker).
def test_ci_failure_under_xdist_replays_in_the_worker(tmp_path):
    pytest.importorskip("xdist")
    project = _make_project(tmp_path / "ci")
    recording = tmp_path / "artifacts"
    recorded, _ = _record_until_failure(project, recording, "-n", "2")
    children = list((recording / "session.bin.children").iterdir())
    assert len(children) == 2, children    # one recording per worker, the controller's is session.bin
    command = _replay_command(recorded.out)
    assert "--pid" in command
    _check_replay(tmp_path, recorded, command)
