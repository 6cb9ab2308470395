"""Start-up paths (issue 17): the hash-seed re-exec made before retrace
imports anything (retracesoftware/__main__.py) gives the same program-visible
environment and a faithful replay; commands it is not sure of are left to
the CLI."""
from __future__ import annotations

import os

import pytest

from retracesoftware.__main__ import _plainly_records, _plainly_replays, _recording_arg
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


@pytest.mark.parametrize("argv, expected", [
    (["--recording", "r.bin"], True),
    (["--recording=r.bin", "--trust", "--force"], True),
    (["replay", "--recording", "r.bin", "--remap", "a=b"], True),
    (["--recording", "r.bin", "--", "python", "app.py"], False),        # record
    (["--recording", "r.bin", "--pid", "12"], False),                   # another file
    (["--recording", "r.bin", "--test", "t.py::x"], False),
    (["--recording", "r.bin", "--help"], False),
    (["inspect", "r.bin"], False),
    (["events", "--recording", "r.bin"], False),
    (["--recording"], False),
    (["--trust"], False),
])
def test_plainly_replays(argv, expected):
    assert _plainly_replays(argv) is expected
    if expected:
        assert _recording_arg(argv) == "r.bin"


def test_program_sees_no_seed_of_ours_and_replays(tmp_path):
    s = Scenario(tmp_path, """
        import os, time
        print(os.environ.get("PYTHONHASHSEED"), os.environ.get("RETRACE_PINNED_HASHSEED"))
        print(hash("a string"), time.time())
    """)
    rec = assert_faithful(s)
    assert rec.out.splitlines()[0] == "None None"


def test_replay_started_with_another_seed_is_faithful(tmp_path):
    """The replay's early restart (__main__._pin_replay_hash_seed_first)
    pins the recorded seed whatever the replay was started with."""
    s = Scenario(tmp_path, """
        import time
        print(hash("a string"), hash(b"bytes"), time.time())
        print(sorted({"x", "y", "z"}, key=hash)[0])
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    for seed in ("1", "random"):
        rep = s.replay(env={"PYTHONHASHSEED": seed})
        assert (rep.returncode, rep.out) == (0, rec.out), rep.err


@pytest.mark.parametrize("options", [(), ("--no-compress",)])
def test_early_seed_read_agrees_with_the_stream_reader(tmp_path, options):
    """The replay's first image reads the recorded seed without the stream
    package (__main__.recorded_hash_seed): the same value the reader gives,
    and None for anything but a whole, CRC-checked preamble (replay_main
    then reads and checks it as before)."""
    from retracesoftware.__main__ import recorded_hash_seed
    from retracesoftware.stream import StreamReader
    s = Scenario(tmp_path, "print('x')")
    rec = s.record(options=options)
    assert rec.returncode == 0, rec.err
    reader = StreamReader(str(s.recording))
    try:
        expected = reader.preamble["hash_seed"]
    finally:
        reader.close()
    assert recorded_hash_seed(str(s.recording)) == expected
    data = s.recording.read_bytes()
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(data[:30] + bytes([data[30] ^ 0xff]) + data[31:])   # in the preamble: CRC fails
    assert recorded_hash_seed(str(damaged)) is None
    damaged.write_bytes(data[:25])                                        # torn preamble
    assert recorded_hash_seed(str(damaged)) is None
    assert recorded_hash_seed(str(tmp_path)) is None                      # not a file


#: Modules the record and replay start of a trivial program does not need:
#: each was imported at every start before (bdb: inspect, ast, dis; pathlib:
#: urllib.parse, ipaddress; json; difflib; tomllib with a valid config cache), and
#: the first replay image, which only restarts with the recorded seed,
#: imports no native layer.
#: typing, logging and datetime (the pure-Python module) were 6.5 ms of every
#: start until session 11: our runtime's protocols, annotations and log
#: messages no longer need them (utils/log.py). The Python backend's msgpack
#: imports datetime.
_NOT_AT_START = ("bdb", "inspect", "ast", "pathlib", "ipaddress", "json", "tomllib", "dataclasses",
                 "hashlib", "pdb", "difflib", "typing", "logging") + (
                     () if os.environ.get("RETRACE_BACKEND") == "python" else ("datetime",))


def _imported(stderr: bytes) -> list:
    """Module names in ``-X importtime`` output, once per import (both images)."""
    names = []
    for line in stderr.decode(errors="replace").splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and not parts[0].rstrip().endswith("self [us]"):
            names.append(parts[2].strip())
    return names


def test_trivial_start_imports_no_heavy_module(tmp_path):
    """Record and replay of ``python -c pass`` (cache warm) import none of
    _NOT_AT_START; the replay's first image does not import the stream
    package (it is imported once: by the image that replays)."""
    import subprocess
    import sys
    from retrace_testing import _env
    env = _env({"RETRACE_CONFIG_CACHE": str(tmp_path / "cache")})
    rec = str(tmp_path / "run.bin")
    record = [sys.executable, "-X", "importtime", "-m", "retracesoftware", "--recording", rec, "--",
              sys.executable, "-c", "pass"]
    replay = [sys.executable, "-X", "importtime", "-m", "retracesoftware", "--recording", rec, "--trust"]
    first = subprocess.run(record, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "tomllib" in _imported(first.stderr) or "retracesoftware.install.config" in _imported(first.stderr)
    for argv in (record, replay):
        run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        names = _imported(run.stderr)
        assert "retracesoftware.install.installer" in names      # (the output is what we think it is)
        assert [n for n in names if n in _NOT_AT_START] == []
        if argv is replay:
            assert names.count("retracesoftware.stream") == 1


def test_program_imports_what_our_runtime_no_longer_imports(tmp_path):
    """logging, typing and datetime are first imported by the program, in
    both runs: logging's import reads the clock (``_startTime``) and its
    records read it again, so the replay takes those calls from the tape."""
    s = Scenario(tmp_path, """
        import sys
        print(sorted(m for m in ("logging", "typing") if m in sys.modules))
        import logging, typing, datetime
        logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                            format="%(relativeCreated).6f %(created).6f %(message)s")
        logging.getLogger("app").info("now %s", datetime.datetime.now())
        print(typing.get_type_hints(lambda x: None) == {}, logging._startTime)
    """)
    rec = assert_faithful(s)
    assert rec.out.splitlines()[0] == "[]", rec.out


def test_our_log_without_the_programs_logging(tmp_path):
    """utils/log.py: without logging loaded, a debug message is dropped and a
    warning is written to stderr (logging's last-resort form), without
    importing logging; once the program loaded logging, its configuration
    applies."""
    import subprocess
    import sys
    code = """
import sys
from retracesoftware.utils.log import Log
log = Log("retracesoftware.test")
log.debug("dropped %s", 1)
log.warning("warned %s", 2)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed %s", 3)
print("logging" in sys.modules)
import logging
logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s")
log.debug("through logging %s", 4)
log.warning("warned %s", 5)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["False", "DEBUG retracesoftware.test through logging 4",
                                       "WARNING retracesoftware.test warned 5"]
    err = run.stderr.splitlines()
    assert err[0] == "warned 2" and err[1] == "failed 3", run.stderr
    assert err[2] == "Traceback (most recent call last):" and err[-1].startswith("ZeroDivisionError")
    assert "dropped" not in run.stderr


def test_a_failing_imports_traceback_shows_no_frame_of_ours(tmp_path):
    """The import hook's functions run under importlib's file name and
    function names (install/import_hook.py): CPython drops them from the
    traceback of a module body that raised, in record and replay alike."""
    s = Scenario(tmp_path, """
        import time
        print(time.time() > 0)
        import broken
    """)
    s.write("broken.py", """
        import json
        raise ValueError("in the module body")
    """)
    plain = s.plain()
    rec = s.record()
    rep = s.replay()
    assert plain.returncode == rec.returncode == rep.returncode == 1
    assert rec.err == plain.err == rep.err, (plain.err, rec.err, rep.err)
    assert "retracesoftware" not in rec.err and "importlib" not in rec.err


def test_the_interpreter_lookup_agrees_with_shutil_which(tmp_path, monkeypatch):
    """record_replay._which (a record's start no longer imports shutil)
    finds what shutil.which finds: the first executable file of that name
    on PATH, never a folder or a file without the execute bit."""
    import shutil
    from retracesoftware.record_replay import _which
    plain = tmp_path / "a"
    plain.mkdir()
    (plain / "tool").write_text("")                     # not executable
    (plain / "dir-tool").mkdir()
    exe = tmp_path / "b"
    exe.mkdir()
    (exe / "tool").write_text("#!/bin/sh\n")
    (exe / "tool").chmod(0o755)
    (exe / "dir-tool").mkdir()
    monkeypatch.setenv("PATH", os.pathsep.join([str(plain), str(exe), os.environ.get("PATH", "")]))
    for name in ("tool", "dir-tool", "sh", "python3", "no-such-program-here"):
        assert _which(name) == shutil.which(name), name
    assert _which("tool") == str(exe / "tool")


def test_a_cold_config_cache_leaves_no_module_for_the_program(tmp_path):
    """The first run after a config or a distribution changed compiles the
    config cache (tomllib, json, typing… imported): the program still
    starts with the modules a warm start gives it, so a recording made cold
    replays warm (a trio program's replay diverged: typing's objects,
    pre-existing on record, were made after the identity-hash switch on
    replay)."""
    from retrace_testing import _env
    s = Scenario(tmp_path, """
        import sys, time
        print(sorted(m for m in ("tomllib", "json", "typing", "string") if m in sys.modules))
        import typing
        T = typing.TypeVar("T")
        print(len({typing.List[int], typing.Dict[str, int], typing.Optional[T], typing.Any}), time.time() > 0)
    """)
    cache = tmp_path / "cold-cache"
    env = {"RETRACE_CONFIG_CACHE": str(cache)}
    rec = s.record(env=env)
    assert rec.returncode == 0, rec.err
    assert rec.out.splitlines()[0] == "[]", rec.out
    assert cache.exists() and any(cache.iterdir())        # it was compiled on this run
    rep = s.replay(env=env)
    assert (rep.returncode, rep.out) == (0, rec.out), rep.err
