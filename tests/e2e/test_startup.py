"""Start-up paths (issue 17): the hash-seed re-exec made before retrace
imports anything (retracesoftware/__main__.py) gives the same program-visible
environment and a faithful replay; commands it is not sure of are left to
the CLI."""
from __future__ import annotations

import pytest

from retracesoftware.__main__ import _plainly_records
from retrace_testing import Scenario, assert_faithful


@pytest.mark.parametrize("argv, expected", [
    (["--recording", "r.bin", "--", "python", "app.py"], True),
    (["--recording=r.bin", "--stacks", "--", "python", "app.py"], True),
    (["record", "--recording", "r.bin", "--redact", "X", "--", "app.py"], True),
    (["--recording", "r.bin"], False),                                   # replay
    (["--recording", "r.bin", "--help", "--", "python", "app.py"], False),
    (["inspect", "r.bin", "--", "x"], False),
    (["--stacks", "--", "python", "app.py"], False),                    # no --recording: usage error
    (["--recording", "--", "python"], False),
    (["events", "--recording", "r.bin", "--", "x"], False),
])
def test_plainly_records(argv, expected):
    assert _plainly_records(argv) is expected


def test_program_sees_no_seed_of_ours_and_replays(tmp_path):
    s = Scenario(tmp_path, """
        import os, time
        print(os.environ.get("PYTHONHASHSEED"), os.environ.get("RETRACE_PINNED_HASHSEED"))
        print(hash("a string"), time.time())
    """)
    rec = assert_faithful(s)
    assert rec.out.splitlines()[0] == "None None"
