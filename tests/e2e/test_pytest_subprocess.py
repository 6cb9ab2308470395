"""``pytest --retrace`` on tests that start child processes: the child runs
in the recorded pass; the replay pass spawns nothing and replays its pid,
its pipes' contents and its exit status from the tape. Before, the replay
spawned it again and ``waitpid`` of the new pid diverged ("expected call
posix.waitpid(<args fingerprint …>), got call posix.waitpid(6915, 0)",
dateutil's test_import_without_six), and the replay's child, never waited
for, raised "ResourceWarning: subprocess N is still running" in a later
test (an error under ``filterwarnings = error``)."""
from __future__ import annotations

import sys
from pathlib import Path

from retrace_testing import run

TESTS = """\
import gc
import os
import subprocess
import sys


def test_runs_this_python():
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         check=True, stdout=subprocess.PIPE).stdout
    assert int(out) > 0


def test_runs_another_program_with_input():
    proc = subprocess.run(["cat"], input=os.urandom(8).hex().encode(), stdout=subprocess.PIPE)
    assert proc.returncode == 0 and len(proc.stdout) == 16


def test_collects_what_earlier_tests_left():
    gc.collect()
"""


def test_children_run_in_the_recording_and_replay_from_it(tmp_path: Path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider\nfilterwarnings =\n    error\n")
    (project / "test_children.py").write_text(TESTS)
    result = run([sys.executable, "-m", "pytest", "-q", "-rfE", "--retrace"], project, timeout=300)
    assert result.returncode == 0, result.out + result.err
    assert "3 passed" in result.out, result.out
