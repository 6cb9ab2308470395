"""``pytest --retrace`` runs each test three times in one process: a plain
first run (it warms caches and lazy imports), the recorded run, the replay.
A test whose second run ends differently because of what its first run left
behind is not nondeterministic: its verdict is the first (plain) run's, and
the difference is listed at the end of the session (not as a warning: suites
run with ``filterwarnings = error``). Before, the recorded run's outcome was
the test's: dateutil's ``test_imported_modules`` (a module-level dict the
body pops: KeyError), ``test_tzstr_internal_timedeltas`` (a cached instance:
"DID NOT WARN") failed under ``--retrace`` and passed plainly; a test that
failed only in its first run passed."""
from __future__ import annotations

import sys
from pathlib import Path

from retrace_testing import run

TESTS = """\
import functools
import random
import warnings

import pytest

NAMES = {"a": 1, "b": 2}


def test_pops_a_module_global():
    assert NAMES.pop("a") == 1


@functools.lru_cache(maxsize=None)
def parse(text):
    warnings.warn("old format", DeprecationWarning)
    return text.upper()


def test_warns_on_a_cold_cache():
    with pytest.warns(DeprecationWarning):
        assert parse("x") == "X"


RUNS = []


def test_fails_in_its_first_run_only():
    RUNS.append(1)
    assert len(RUNS) > 1, "first run"


def test_really_fails():
    assert random.random() > 2, "fails in every run"
"""


def test_the_first_runs_outcome_is_the_tests(tmp_path: Path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider\nfilterwarnings =\n    error\n")
    (project / "test_first.py").write_text(TESTS)
    result = run([sys.executable, "-m", "pytest", "-q", "-rfE", "--retrace"], project, timeout=300)
    out = result.out
    assert result.returncode == 1, out + result.err
    assert "2 failed, 2 passed" in out, out
    assert "FAILED test_first.py::test_fails_in_its_first_run_only" in out, out
    assert "FAILED test_first.py::test_really_fails" in out, out
    assert "ReplayDivergence" not in out, out
    assert "retrace: outcome changed by the first run" in out, out
    for line in ("test_first.py::test_pops_a_module_global: first run passed; "
                 "recorded run raised KeyError: 'a'",
                 "test_first.py::test_warns_on_a_cold_cache: first run passed; recorded run raised Failed",
                 "test_first.py::test_fails_in_its_first_run_only: first run raised AssertionError: "
                 "first run"):
        assert line in out, out


MUTATED_FIXTURE = """\
import os
import pytest


@pytest.fixture
def search_path(tmp_path):
    return [str(tmp_path)]


def test_inserts_into_its_fixture(search_path):
    search_path.insert(0, "/nonexistent-retrace-dir")
    found = [os.path.isdir(p) for p in search_path]
    assert found[-1]
"""


def test_a_divergence_from_a_changed_fixture_names_the_fixture(tmp_path: Path):
    # the three runs share the fixture: the recorded run checks two
    # directories, the replay three (another call than the recording's);
    # the failure says which fixtures were shared (jinja2's
    # test_filesystem_loader_overlapping_names)
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (project / "test_fixture.py").write_text(MUTATED_FIXTURE)
    result = run([sys.executable, "-m", "pytest", "-q", "-rfE", "--retrace"], project, timeout=300)
    assert result.returncode == 1, result.out + result.err
    assert "replay diverged" in result.out, result.out
    assert "fixture search_path is made once for the test's three runs" in result.out, result.out
