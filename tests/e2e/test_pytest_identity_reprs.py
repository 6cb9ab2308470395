"""``pytest --retrace`` gives ``id()`` and the default reprs
(``<_io.BytesIO object at 0x…>``) from per-thread counters in each pass, as
a CLI recording on the C++ backend does. Before, a test writing such a repr
to a file diverged at the write (dateutil's ``tzfile(BytesIO(...))`` keeps
``repr(fileobj)``; its pickle written to a temporary file: TzPickleFileTest,
3 tests): "expected call posix.write(<args fingerprint …>), got call
posix.write(…)"."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from retrace_testing import run

TESTS = """\
import io
import pickle


class Zone:
    def __init__(self, fileobj):
        self.filename = repr(fileobj)


def test_writes_a_default_repr(tmp_path):
    with open(tmp_path / "zone.pickle", "wb") as f:
        f.write(pickle.dumps(Zone(io.BytesIO(b"data"))))
        f.write(repr(object()).encode() + str(id(object())).encode())
"""


def test_default_reprs_replay_in_process(tmp_path: Path):
    from retracesoftware import utils
    if utils.BACKEND != "cpp":
        pytest.skip("deterministic ids need the C++ backend")
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (project / "test_reprs.py").write_text(TESTS)
    result = run([sys.executable, "-m", "pytest", "-q", "-rfE", "--retrace"], project, timeout=300)
    assert result.returncode == 0, result.out + result.err
    assert "1 passed" in result.out, result.out
