"""``pytest --retrace`` runs a test three times in one process (warm-up,
record, replay) with the fixtures set up once: the test's own temp directory
(``tmp_path``/``tmpdir``) is put back as its setup left it before the record
and the replay passes, so a test that appends to a file there sees one
run's worth (aiofiles' append-mode write/flush tests). Before, the file grew
once per run and the recorded run's assertion failed."""
from __future__ import annotations

import sys
from pathlib import Path

from retrace_testing import run

TEST = """\
import random


def test_appends_to_a_file_in_tmp_path(tmp_path):
    path = tmp_path / "log.txt"
    with open(path, "a") as f:
        f.write("x" * random.randint(1, 5))
    assert len(path.read_text()) <= 5        # one run's worth


def test_tmpdir_too(tmpdir):
    f = tmpdir.join("n.txt")
    f.write("a", mode="a")
    assert f.read() == "a"
"""


def test_each_run_starts_from_the_fixtures_tmp_path(tmp_path: Path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (project / "test_append.py").write_text(TEST)
    result = run([sys.executable, "-m", "pytest", "-q", "-rA", "--retrace"], project, timeout=300)
    assert result.returncode == 0, result.out + result.err
    assert "2 passed" in result.out, result.out
