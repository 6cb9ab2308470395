"""Creating the recording file (docs/RELIABILITY.md, "Sharing recordings"):
a symlink at the path is replaced, never followed; the file holds an
advisory lock while written; a second writer on a held path gets EBUSY.
Both backends."""
from __future__ import annotations

import errno
import os
import stat

import pytest


def test_symlink_at_the_path_is_replaced_not_followed(impl, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    victim.chmod(0o644)
    path = tmp_path / "run.bin"
    path.symlink_to(victim)
    w = impl.StreamWriter(str(path), {"p": 1})
    w.write(1)
    w.close()
    assert victim.read_text() == "precious" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    r = impl.StreamReader(str(path))
    assert r.preamble == {"p": 1} and r.read() == 1
    r.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.bin", "victim.txt"]   # no temporary left


def test_second_writer_on_a_held_path_fails_at_once(impl, tmp_path):
    path = str(tmp_path / "run.bin")
    first = impl.StreamWriter(path, {"who": "first"})
    try:
        with pytest.raises(OSError) as info:
            impl.StreamWriter(path, {"who": "second"})
        assert info.value.errno == errno.EBUSY
        first.write("kept")
    finally:
        first.close()
    r = impl.StreamReader(path)
    assert r.preamble == {"who": "first"} and r.read() == "kept"
    r.close()
    # once closed, the path can be recorded again
    again = impl.StreamWriter(path, {"who": "again"})
    again.close()
    assert sorted(os.listdir(tmp_path)) == ["run.bin"]


def test_busy_path_with_pid_pattern_gets_a_new_name(impl, tmp_path):
    from retracesoftware.record_replay import expand_recording_path
    held = impl.StreamWriter(str(tmp_path / f"run-{os.getpid()}.bin"), {})
    try:
        assert expand_recording_path(str(tmp_path / "run-{pid}.bin")) == str(tmp_path / f"run-{os.getpid()}-1.bin")
    finally:
        held.close()
    assert expand_recording_path(str(tmp_path / "run-{pid}.bin")) == str(tmp_path / f"run-{os.getpid()}.bin")
