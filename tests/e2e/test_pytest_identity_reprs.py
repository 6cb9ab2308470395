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
    result = _retrace_project(tmp_path, {"test_reprs.py": TESTS})
    assert "1 passed" in result.out, result.out


KEPT = """\
import copy

_kept = []      # one Zone per run of the test: objects of earlier passes live on


class Zone:
    pass


def test_ids_stay_unique_with_objects_of_earlier_passes():
    zone = Zone()
    zone.n = len(_kept)
    _kept.append(zone)
    fresh = [Zone() for _ in range(3)]
    everything = _kept + fresh
    ids = [id(o) for o in everything]
    assert len(set(ids)) == len(ids), ids
    copied = copy.deepcopy(everything)      # its memo is keyed by id
    assert [getattr(o, "n", None) for o in copied] == [getattr(o, "n", None) for o in everything]
"""


def test_an_object_of_an_earlier_pass_keeps_an_id_no_new_object_gets(tmp_path: Path):
    # each pass restarts the counters; the recorded pass's Zone lives on in
    # _kept, and the replayed pass's first Zone would have got its id
    result = _retrace_project(tmp_path, {"test_kept.py": KEPT})
    assert "1 passed" in result.out, result.out


TAKEN_BEFORE = """\
import datetime
import io

# What freezegun does at import: the ids of the objects it will look for.
REAL_IDS = {id(datetime.datetime), id(datetime.date)}


def test_first():
    assert id(datetime.datetime) in REAL_IDS


def test_ids_taken_before_the_test_are_the_ids_inside_it():
    import helper_late          # imported in this test's first run
    assert id(datetime.date) in REAL_IDS
    assert id(io.BytesIO) in helper_late.LATE_IDS
"""

HELPER = """\
import io

LATE_IDS = {id(io.BytesIO)}
"""


def test_ids_taken_before_or_between_tests_stay_the_same_inside_them(tmp_path: Path):
    # an id a library keeps from its import (freezegun's ids of the real
    # datetime types) must match the id the object has inside a test: the
    # objects that were alive when ids were switched on keep their
    # addresses, and ids first asked between passes are addresses too
    result = _retrace_project(tmp_path, {"test_taken.py": TAKEN_BEFORE, "helper_late.py": HELPER},
                              "-p", "no:randomly")
    assert "2 passed" in result.out, result.out
    assert "recorded run raised" not in result.out, result.out


def _retrace_project(tmp_path: Path, files: dict, *extra):
    """*files* in a project of their own, run under ``pytest --retrace``
    (C++ backend: deterministic ids need it)."""
    from retracesoftware import utils
    if utils.BACKEND != "cpp":
        pytest.skip("deterministic ids need the C++ backend")
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    for name, text in files.items():
        (project / name).write_text(text)
    result = run([sys.executable, "-m", "pytest", "-q", "-rfE", *extra, "--retrace"], project, timeout=300)
    assert result.returncode == 0, result.out + result.err
    return result
