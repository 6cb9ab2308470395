"""A recording is data, not a program (docs/RELIABILITY.md, "Sharing
recordings"). Each test makes a real recording, rewrites it the way an
attacker would (the test writes the crafted preamble or value itself), and
checks that replay and inspect run nothing the file chose: no marker file
appears, and the exit code and the one line are as specified."""
from __future__ import annotations

import os
import struct
import sys
import zlib

import msgpack
import pytest

from retrace_testing import Scenario, run

MAGIC = b"\x89RTRC\r\n\x1a"
HEADER = 12

# Every planted file writes this marker when it runs or is imported.
PLANT = "open({marker!r}, 'w').write('ran')\n"


def split(data: bytes):
    """(preamble map, the bytes after the preamble frame)."""
    length, _ = struct.unpack_from("<II", data, HEADER)
    payload = data[HEADER + 8:HEADER + 8 + length]
    pre = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return pre, data[HEADER + 8 + length:]


def frame(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload) & 0xFFFFFFFF) + payload


def with_preamble(data: bytes, pre: dict) -> bytes:
    _, rest = split(data)
    return data[:HEADER] + frame(msgpack.packb(pre, use_bin_type=True)) + rest


def fix_crcs(data: bytes) -> bytes:
    buf = bytearray(data)
    pos = HEADER
    while pos + 8 <= len(buf):
        length, _ = struct.unpack_from("<II", buf, pos)
        if pos + 8 + length > len(buf):
            break
        struct.pack_into("<I", buf, pos + 4, zlib.crc32(bytes(buf[pos + 8:pos + 8 + length])) & 0xFFFFFFFF)
        pos += 8 + length
    return bytes(buf)


def edit_events(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new)
    pre_len, _ = struct.unpack_from("<II", data, HEADER)
    head, tail = data[:HEADER + 8 + pre_len], data[HEADER + 8 + pre_len:]
    assert old in tail
    return fix_crcs(head + tail.replace(old, new))


def replay(s, *options, cwd=None, env=None):
    return run([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording), *options],
               cwd or s.dir, env)


def inspect(s, *options, cwd=None):
    return run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording), *options], cwd or s.dir)


def one_line(r, code, *words):
    assert r.returncode == code, (r.returncode, r.err)
    lines = r.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("retrace: error: "), r.err
    for w in words:
        assert w in lines[0], r.err
    assert "Traceback" not in r.err


@pytest.fixture
def recorded(tmp_path):
    s = Scenario(tmp_path, "import time\nprint('hello', time.time())\n", name="hello.py")
    rec = s.record()
    assert rec.returncode == 0, rec.err
    s.marker = tmp_path / "MARKER"
    return s, rec


def plant(s, name):
    path = s.dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PLANT.format(marker=str(s.marker)))
    return path


# ------------------------------------------------------------- targets
def test_script_path_comes_from_what_inspect_shows(recorded):
    """target.path pointing at a hidden helper is ignored: the replay runs
    the script inspect shows (value, relative to the recorded cwd)."""
    s, rec = recorded
    plant(s, ".hidden_helper.py")
    pre, _ = split(s.recording.read_bytes())
    pre["target"]["path"] = str(s.dir / ".hidden_helper.py")
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    assert "python hello.py" in inspect(s).out
    rep = replay(s)
    assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.err
    assert not s.marker.exists()


def test_script_without_a_recorded_digest_is_refused(recorded):
    s, _ = recorded
    plant(s, "other.py")
    pre, _ = split(s.recording.read_bytes())
    pre["target"]["value"] = "other.py"
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    one_line(replay(s), 4, "no digest of its program", "other.py")
    assert not s.marker.exists()


def test_sources_left_out_is_refused(recorded):
    s, _ = recorded
    pre, _ = split(s.recording.read_bytes())
    del pre["sources"]
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    one_line(replay(s), 4, "no digest of its program", "hello.py")
    # --force cannot run a program the recording cannot name
    one_line(replay(s, "--force"), 4, "no digest")


def test_changed_script_is_refused_unless_forced(recorded):
    s, rec = recorded
    s.script.write_text(s.script.read_text() + "print('edited')\n")
    one_line(replay(s), 4, "hello.py", "differs from the recorded one", "--force")
    rep = replay(s, "--force")
    assert rep.returncode in (0, 3) and "retrace: warning:" in rep.err, rep.err


def test_module_target_with_no_recorded_digest_is_refused(recorded):
    """kind: module naming a module the recording never ran: its code is
    checked before it runs (no digest on the tape) and does not run."""
    s, _ = recorded
    plant(s, "evil_mod.py")
    pre, _ = split(s.recording.read_bytes())
    pre["target"] = {"kind": "module", "value": "evil_mod", "args": [], "path": ""}
    pre["sys_path"] = [str(s.dir)] + pre["sys_path"]
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    one_line(replay(s), 4, "no digest of source file", "evil_mod.py")
    assert not s.marker.exists()


def test_imported_module_changed_is_refused(tmp_path):
    s = Scenario(tmp_path, "import time, helper\nprint(helper.X, time.time())\n")
    s.write("helper.py", "X = 1\n")
    rec = s.record()
    assert rec.returncode == 0, rec.err
    assert replay(s).stdout == rec.stdout
    s.write("helper.py", "X = 2\n")
    one_line(replay(s), 4, "helper.py", "differs from the recorded one")
    rep = replay(s, "--force")       # runs the changed code (its output then differs: exit 3)
    assert rep.returncode == 3 and rep.err.startswith("retrace: warning: source file"), rep.err


def test_code_recording_needs_trust(tmp_path):
    s = Scenario(tmp_path, "")
    marker = tmp_path / "MARKER"
    code = f"import time; print(time.time())\nopen({str(marker)!r}, 'a').write('x')"
    rec = s.record(command=["python", "-c", code])
    assert rec.returncode == 0, rec.err
    marker.unlink()
    one_line(replay(s), 2, "python -c 'import time; print(time.time())…'", "--trust", "inspect")
    assert not marker.exists()
    rep = replay(s, "--trust")
    assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.err


def test_code_target_forged_into_a_script_recording_needs_trust(recorded):
    s, _ = recorded
    pre, _ = split(s.recording.read_bytes())
    pre["target"] = {"kind": "code", "value": f"open({str(s.marker)!r}, 'w')", "args": [], "path": ""}
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    one_line(replay(s), 2, "--trust")
    assert not s.marker.exists()


# ------------------------------------------------------- reading imports
def test_sys_path_of_the_recording_cannot_steer_our_imports(recorded):
    s, rec = recorded
    evil = s.dir / "evil"
    for name in ("bdb", "traceback", "subprocess", "difflib", "zoneinfo", "decimal", "json"):
        plant(s, f"evil/{name}.py")
    pre, _ = split(s.recording.read_bytes())
    pre["sys_path"] = [str(evil)] + pre["sys_path"]
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    rep = replay(s)
    assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.err
    assert not s.marker.exists()


def test_reading_imports_nothing_from_the_cwd(tmp_path):
    """A recorded ZoneInfo whose key is not a system time zone decodes to a
    placeholder: zoneinfo would import the tzdata package from sys.path."""
    s = Scenario(tmp_path, """
        import datetime, zoneinfo
        now = datetime.datetime.now(zoneinfo.ZoneInfo("UTC"))
        print(now.tzinfo)
    """)
    rec = s.record(options=("--no-compress",))    # the test edits raw event bytes
    assert rec.returncode == 0, rec.err
    data = s.recording.read_bytes()
    s.recording.write_bytes(edit_events(data, b"\xa3UTC", b"\xa3XYZ"))
    marker = tmp_path / "MARKER"
    for name in ("tzdata/__init__.py", "json.py", "zoneinfo.py", "decimal.py", "difflib.py"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(PLANT.format(marker=str(marker)))
    for options in ((), ("--json",)):
        ins = inspect(s, *options)
        assert ins.returncode == 0, ins.err
    # (a zoneinfo.py next to the program would shadow the stdlib for the
    # program itself, with or without retrace: not planted for the replay)
    (tmp_path / "zoneinfo.py").unlink()
    (tmp_path / "decimal.py").unlink()
    rep = replay(s)
    assert rep.returncode in (0, 1, 3), rep.err      # the program gets the placeholder: data, not code
    # (the program's own code fails on the placeholder: its traceback, then
    # the divergence at its exit code; nothing ran that the file chose)
    assert not marker.exists()


# ------------------------------------------------------------- preamble
@pytest.mark.parametrize("field, value, words", [
    ("hash_seed", "random", "hash_seed"),
    ("hash_seed", "99999999999", "hash_seed"),
    ("hash_seed", -1, "hash_seed"),
    ("hash_seed", [1], "hash_seed"),
    ("target", "hello.py", "target"),
    ("argv", "not a list", "argv"),
    ("sys_path", [1, 2], "sys_path"),
    ("cwd", "relative/dir", "cwd"),
    ("process", {"kind": "fork", "name": "../x/c.bin"}, "process.name"),
])
def test_preamble_schema(recorded, field, value, words):
    s, _ = recorded
    pre, _ = split(s.recording.read_bytes())
    pre[field] = value
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    one_line(replay(s), 4, "bad recording", words)
    assert not s.marker.exists()


def test_child_name_from_the_tape_is_not_a_path(tmp_path):
    """A parent's tape names its forked child's recording; '../x/..' is refused."""
    s = Scenario(tmp_path, """
        import os, time
        pid = os.fork()
        if pid == 0:
            print("child", time.time(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent", time.time())
    """)
    rec = s.record(options=("--no-compress",))    # the test edits raw event bytes
    assert rec.returncode == 0, rec.err
    children = sorted(p.name for p in (tmp_path / "run.bin.children").iterdir())
    name = children[0]
    evil = ("../x/" + "c" * (len(name) - 9) + ".bin")
    assert len(evil) == len(name)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / evil[5:]).write_bytes((tmp_path / "run.bin.children" / name).read_bytes())
    s.recording.write_bytes(edit_events(s.recording.read_bytes(), name.encode(), evil.encode()))
    rep = replay(s)
    assert rep.returncode == 4, rep.err
    assert rep.err.splitlines()[-1].startswith("retrace: error: bad recording: child recording name"), rep.err
    assert b"child" not in rep.stdout


def test_huge_value_is_refused_without_allocating(tmp_path):
    """An EXT_OBJECT asking for bytearray(10**10): a bad recording at once
    (both backends), under an address-space limit of 1 GiB."""
    import subprocess
    s = Scenario(tmp_path, "import time\nprint(time.time())\n")
    assert s.record().returncode == 0
    data = s.recording.read_bytes()
    pre_len, _ = struct.unpack_from("<II", data, HEADER)
    bad = msgpack.packb(msgpack.ExtType(11, msgpack.packb(["bytearray", 10**10])))
    crafted = data[:HEADER + 8 + pre_len] + frame(bad)
    path = tmp_path / "crafted.bin"
    path.write_bytes(crafted)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from retracesoftware.stream import StreamReader, RecordingFormatError\n"
        "r = StreamReader(sys.argv[1])\n"
        "try:\n"
        "    r.read()\n"
        "except RecordingFormatError as e:\n"
        "    print('bad', e.reason)\n")
    for backend in ("cpp", "python"):
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                             env={**os.environ, "RETRACE_BACKEND": backend}, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith("bad"), (backend, out.stdout, out.stderr)


# ------------------------------------------------------ control characters
def test_control_characters_are_escaped(recorded):
    s, _ = recorded
    pre, _ = split(s.recording.read_bytes())
    pre["argv"] = ["hello.py", "\x1b]0;pwned\x07\x1b[2J"]
    pre["target"]["args"] = ["\x1b]0;pwned\x07\x1b[2J"]
    pre["cwd"] = str(s.dir) + "\x1b[31m"
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    for options in ((), ("--json",)):
        ins = inspect(s, *options)
        assert ins.returncode == 0, ins.err
        assert "\x1b" not in ins.out and "\x07" not in ins.out
        assert "\\x1b" in ins.out
    pre["target"]["value"] = "hel\x1b[2Jlo.py"
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    rep = replay(s)
    assert rep.returncode == 4 and "\x1b" not in rep.err and "\\x1b" in rep.err, rep.err


# ------------------------------------------------------- the recording file
def test_second_recorder_on_the_same_path_fails_at_once(tmp_path):
    import subprocess
    from retrace_testing import _env
    s = Scenario(tmp_path, """
        import sys, time
        print("ready", time.time(), flush=True)
        sys.stdin.readline()
        print("done", time.time())
    """)
    first = subprocess.Popen([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording), "--",
                              "python", "app.py"], cwd=tmp_path, env=_env(), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert first.stdout.readline().startswith(b"ready")
        second = s.record()
        one_line(second, 2, "is being written by another running recorder")
        assert second.stdout == b""                 # the second program did not run
    finally:
        out, err = first.communicate(b"\n", timeout=120)
    assert first.returncode == 0, err
    rep = replay(s)
    assert rep.returncode == 0 and rep.out.startswith("ready") and "done" in rep.out, rep.err


def test_symlink_at_the_recording_path_is_not_followed(tmp_path):
    s = Scenario(tmp_path, "import time\nprint(time.time())\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    victim.chmod(0o644)
    s.recording.symlink_to(victim)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    assert victim.read_text() == "precious" and oct(victim.stat().st_mode & 0o777) == "0o644"
    assert not s.recording.is_symlink()
    assert replay(s).stdout == rec.stdout


def test_thread_switch_to_an_unhashable_id_is_a_bad_recording(tmp_path):
    """A THREAD_SWITCH whose id is a list (it hung / printed internal tracebacks)."""
    s = Scenario(tmp_path, """
        import threading, time
        out = []
        t = threading.Thread(target=lambda: out.append(time.time()))
        t.start(); t.join()
        print(out)
    """)
    assert s.record(options=("--no-compress",)).returncode == 0
    s.recording.write_bytes(edit_events(s.recording.read_bytes(), b"\xd4\x0a\x01", b"\xd4\x0a\x90"))
    one_line(replay(s, "--thread-timeout", "5"), 4, "bad thread id []")


def test_zone_naming_a_fifo_is_not_opened_blocking(recorded, tmp_path):
    """The recorded start zone names a FIFO (TZ=":/path"): the replay checks
    whether the file there has the recorded bytes (install/zone.py) and must
    neither block on it nor read it; it replays with the recorded bytes."""
    s, rec = recorded
    fifo = tmp_path / "zone.fifo"
    os.mkfifo(fifo)
    pre, _ = split(s.recording.read_bytes())
    zone = pre["options"]["zone"]
    assert isinstance(zone, list) and len(zone) == 2
    if not isinstance(zone[1], bytes):
        pytest.skip("no zone file on this machine: the replay reads none")
    pre["options"]["zone"] = [":" + str(fifo), zone[1]]
    s.recording.write_bytes(with_preamble(s.recording.read_bytes(), pre))
    rep = run([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording)], s.dir, timeout=60)
    assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.err
