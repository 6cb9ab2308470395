"""``pytest --retrace`` installs per test, after the project's modules were
imported: a function a decorator made at import around a builtin
(``aiofiles.os.remove = wrap(os.remove)``) keeps the original in its
closure. That reference is patched like one in module globals, so the call
is recorded and replayed (before, it ran live in both passes: aiofiles'
remove/unlink removed the file for real in the record pass and failed with
FileNotFoundError in the replay)."""
from __future__ import annotations

import sys
from pathlib import Path

from retrace_testing import run

HELPERS = """\
import functools
import time


def wrap(func):
    @functools.wraps(func)
    def run(*args):
        return func(*args)
    return run


now = wrap(time.time)
"""

TEST = """\
import time

import helpers


def test_sleeps_by_a_wrapped_clock():
    time.sleep((helpers.now() % 1) / 1000)   # the argument comes from the wrapped clock
"""


def test_a_builtin_captured_in_a_closure_is_recorded(tmp_path: Path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (project / "helpers.py").write_text(HELPERS)
    (project / "test_clock.py").write_text(TEST)
    result = run([sys.executable, "-m", "pytest", "-q", "-rA", "--retrace"], project, timeout=300)
    assert result.returncode == 0, result.out + result.err
    assert "1 passed" in result.out, result.out
