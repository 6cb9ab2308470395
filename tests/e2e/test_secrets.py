"""Secrets: what a recording holds, what we display, --redact, file mode."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from retrace_testing import _env, run

TOKEN = "tok-9f8e7d6c5b4a-SECRET"
UNREAD = "never-read-value-51a2b3"


def _inspect(s, *extra, env=None):
    return run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording), *extra], s.dir, env)


def test_recording_is_private_even_with_a_permissive_umask(scenario):
    s = scenario("import time; print(time.time())")
    proc = subprocess.run(
        [sys.executable, "-m", "retracesoftware", "--recording", str(s.recording), "--", "python", "app.py"],
        cwd=s.dir, env=_env(), capture_output=True, preexec_fn=lambda: os.umask(0))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(s.recording.stat().st_mode) == 0o600


def test_no_environment_value_the_program_did_not_read(scenario):
    s = scenario("""
        import os
        print(os.environ.get("READ_ME"))
    """)
    env = {"API_TOKEN": UNREAD, "PLAIN_UNREAD": UNREAD + "-plain", "READ_ME": "read-me-value-77"}
    rec = s.record(env=env, options=("--no-compress",))   # the raw bytes are searched
    assert rec.returncode == 0, rec.err
    data = s.recording.read_bytes()
    assert UNREAD.encode() not in data
    assert b"read-me-value-77" in data          # what the program read is data like any other
    assert s.replay(env=env).stdout == rec.stdout


def test_inspect_masks_secret_looking_strings(scenario):
    s = scenario("import sys; print(len(sys.argv))")
    rec = s.record("--password", "hunter2-xyz", "--token=abc123456789", "https://bob:pw-4567@example.com/x")
    assert rec.returncode == 0, rec.err
    human = _inspect(s)
    assert human.returncode == 0, human.err
    for secret in ("hunter2-xyz", "abc123456789", "pw-4567"):
        assert secret not in human.out
    assert "--password ***" in human.out and "bob:***@example.com" in human.out
    data = _inspect(s, "--json")
    assert "hunter2-xyz" not in data.out and "pw-4567" not in data.out
    assert json.loads(data.out)["argv"][2] == "***"


def test_divergence_report_masks_secret_environment_values(scenario):
    s = scenario("""
        import os
        token = os.environ["API_TOKEN"]
        os.path.exists("/")
    """)
    env = {"API_TOKEN": TOKEN}
    assert s.record(env=env).returncode == 0
    s.script.write_text(s.script.read_text().replace('os.path.exists("/")', "os.path.exists(token)"))
    rep = s.replay("--force", env=env)
    assert rep.returncode == 3, rep.err
    assert "retrace: error: replay diverged" in rep.err
    assert TOKEN not in rep.err and "***" in rep.err, rep.err


def test_redacted_variable_is_not_in_the_recording_and_stops_replay_when_used(scenario):
    s = scenario("""
        import os
        token = os.environ["API_TOKEN"]
        home = os.environ.get("HOME")
        print("read", home is not None, flush=True)
        print("token length", len(token))
    """)
    env = {"API_TOKEN": TOKEN}
    rec = s.record(env=env, options=("--redact", "API_TOKEN", "--no-compress"))
    assert rec.returncode == 0, rec.err
    assert rec.out == f"read True\ntoken length {len(TOKEN)}\n"      # the program saw the real value
    assert TOKEN.encode() not in s.recording.read_bytes()
    rep = s.replay(env=env)
    assert rep.returncode == 4, rep.err
    assert rep.out == "read True\n"                                   # replayed up to the use
    assert rep.err == ("retrace: error: the program used the environment variable API_TOKEN, whose value "
                       "was redacted from this recording (--redact API_TOKEN) — replay stopped there; "
                       "re-record without --redact API_TOKEN to replay past it\n"), rep.err


def test_redacted_variable_read_but_not_used_replays(scenario):
    s = scenario("""
        import os, time
        token = os.environ.get("API_TOKEN")
        missing = os.environ.get("NOT_SET_AT_ALL")
        print(missing, time.time())
    """)
    env = {"API_TOKEN": TOKEN}
    rec = s.record(env=env, options=("--redact", "API_TOKEN", "--redact", "NOT_SET_AT_ALL", "--no-compress"))
    assert rec.returncode == 0, rec.err
    assert TOKEN.encode() not in s.recording.read_bytes()
    rep = s.replay(env=env)
    assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.err
