"""Divergence reports show the program's frames only, and name the program's
line even when the stdlib made the call on its behalf."""
from __future__ import annotations

import email.utils
import os
import runpy
import textwrap
import time

import pytest

import retracesoftware
from retracesoftware.proxy import MemoryReader, MemoryWriter, ReplayDivergence, System

HERE = os.path.basename(__file__)
PACKAGE = os.path.dirname(os.path.abspath(retracesoftware.__file__))


def roundtrip(record_program, replay_program):
    writer = MemoryWriter()
    rec = System("record", writer=writer)
    rec.patch(time, "time")
    try:
        rec.run(record_program)
    finally:
        rec.unpatch_all()
    rep = System("replay", reader=MemoryReader(writer))
    rep.patch(time, "time")
    try:
        with pytest.raises(ReplayDivergence) as info:
            rep.run(replay_program)
            rep.finish()
    finally:
        rep.unpatch_all()
    return info.value


def test_call_made_by_the_stdlib_names_the_programs_line():
    def replayed():
        time.time()
        return email.utils.formatdate()          # the stdlib calls time.time()
    line = replayed.__code__.co_firstlineno + 2

    div = roundtrip(lambda: time.time(), replayed)
    first = str(div).splitlines()[0]
    assert first.startswith("replay diverged at event 5: expected end of recording, got call time.time()")
    assert first.endswith(f"({HERE}:{line})"), first
    # The stack still shows where in the stdlib the call came from ...
    assert any(f[0].endswith(os.path.join("email", "utils.py")) for f in div.stack)
    # ... but none of our machinery.
    assert not [f for f in div.stack if f[0].startswith(PACKAGE)]
    assert "replaying at:" in str(div)
    assert PACKAGE not in str(div)


def test_runpy_and_importlib_frames_are_dropped(tmp_path):
    script = tmp_path / "app_script.py"
    script.write_text(textwrap.dedent("""
        import time
        time.time()
        import imported_mod
    """))
    mod = tmp_path / "imported_mod.py"
    mod.write_text("import time\nVALUE = time.time()\n")

    def recorded():
        time.time()

    def replayed():
        import sys
        sys.path.insert(0, str(tmp_path))
        try:
            runpy.run_path(str(script))
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("imported_mod", None)

    div = roundtrip(recorded, replayed)
    files = [f[0] for f in div.stack]
    # the extra call is the imported module's top-level clock read
    assert files[-2:] == [str(script), str(mod)]
    assert not [f for f in files if f.startswith(("<frozen runpy>", "<frozen importlib"))]
    assert not [f for f in files if f.startswith(PACKAGE)]
    assert str(div).splitlines()[0].endswith("(imported_mod.py:2)")
    listing = str(div).split("replaying at:\n", 1)[1]
    assert "<frozen" not in listing and "runpy.py" not in listing


def test_innermost_frame_when_all_frames_are_stdlib():
    from retracesoftware.proxy.system import _where

    stdlib_file = email.utils.__file__
    assert _where(((stdlib_file, 10, "f"), (stdlib_file, 20, "g"))) == "utils.py:20"
    assert _where((("app.py", 3, "<module>"), (stdlib_file, 20, "g"))) == "app.py:3"
    assert _where(()) == "<unknown>"
