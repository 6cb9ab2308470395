"""Writing the recording fails: the program never notices.

Policy (docs/RELIABILITY.md): one ``retrace: warning:`` line on stderr; the
program's stdout, stderr and exit code are what plain python gives; what was
written before the failure stays a valid recording that ends early.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys

import pytest

from retrace_testing import _env, run

PROGRAM = """
    import sys, time
    total = 0
    for i in range(60000):
        total += int(time.time()) & 1
    print("done", i, flush=True)
    sys.exit(5)
"""


def _cli(scenario, recording, preexec_fn=None):
    # Uncompressed: the size limits below are in recorded bytes (zstd makes
    # this program's recording ~20x smaller and the limit would never hit).
    proc = subprocess.run(
        [sys.executable, "-m", "retracesoftware", "--recording", str(recording), "--no-compress",
         "--", "python", "app.py"],
        cwd=scenario.dir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
        preexec_fn=preexec_fn)
    return proc


def _assert_program_unchanged(scenario, proc, warning):
    plain = scenario.plain()
    assert proc.returncode == plain.returncode == 5
    assert proc.stdout == plain.stdout == b"done 59999\n"
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retrace: warning: ") and warning in lines[0], lines


@pytest.mark.parametrize("where", ["/dev/full", "missing-dir/run.bin"])
def test_recording_cannot_be_created(scenario, where):
    s = scenario(PROGRAM)
    proc = _cli(s, where if where.startswith("/") else s.dir / where)
    _assert_program_unchanged(s, proc, "cannot create the recording")
    assert "running the program without recording" in proc.stderr.decode()


def test_a_program_run_without_recording_has_its_collector(scenario):
    """The collector the CLI paused for our start-up is on again when the
    program runs without a recording (utils/startup.py)."""
    s = scenario("import gc; print(gc.isenabled(), gc.get_threshold())")
    proc = subprocess.run([sys.executable, "-m", "retracesoftware", "--recording", "/dev/full", "--",
                           "python", "app.py"], cwd=s.dir, env=_env(), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == s.plain().stdout and proc.stdout.startswith(b"True (")


def _file_size_limit(limit):
    def apply():
        # EFBIG from write(2) instead of SIGXFSZ killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _assert_incomplete_but_replayable(s):
    info = run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording), "--json"], s.dir)
    assert info.returncode == 0, info.err
    summary = json.loads(info.out)
    assert summary["complete"] is False and summary["damage"] is None   # cut back to whole frames
    rep = s.replay()
    assert rep.returncode == 4, rep.err
    assert rep.err == (f"retrace: error: the recording ends early at event {summary['events']} "
                       f"(the recorded program was killed) — replay stopped there\n")
    return summary


def test_disk_full_while_recording(scenario):
    s = scenario(PROGRAM)
    limit = 400_000
    proc = _cli(s, s.recording, preexec_fn=_file_size_limit(limit))
    _assert_program_unchanged(s, proc, "cannot write the recording")
    assert "File too large" in proc.stderr.decode()
    assert 0 < s.recording.stat().st_size <= limit
    # How many whole frames fit under the limit depends on when the flusher
    # ran (a loaded machine flushes bigger frames): zero is legitimate.
    _assert_incomplete_but_replayable(s)


def test_real_full_filesystem(scenario, tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        s = scenario(PROGRAM)
        s.recording = mnt / "run.bin"
        proc = _cli(s, s.recording)
        _assert_program_unchanged(s, proc, "No space left on device")
        _assert_incomplete_but_replayable(s)
    finally:
        subprocess.run(["umount", str(mnt)])


def test_recording_removed_while_running(scenario):
    s = scenario("""
        import os, sys, time
        time.time()
        os.remove("run.bin")
        for i in range(20000):
            time.time()
        print("still here", flush=True)
        sys.exit(3)
    """)
    proc = _cli(s, s.recording)
    plain_out = b"still here\n"
    assert proc.returncode == 3 and proc.stdout == plain_out
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retrace: warning: the recording ") \
        and "was removed or replaced while the program ran" in lines[0], lines
    assert not s.recording.exists()
