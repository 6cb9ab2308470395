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


def test_redacted_variable_is_not_in_the_recording_and_is_refilled_on_replay(scenario):
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
    rep = s.replay(env=env)                      # set where it replays: its value
    assert rep.returncode == 0 and rep.stdout == rec.stdout and rep.err == "", rep.err
    rep = s.replay()                              # not set: a placeholder of the same length, one warning
    assert rep.returncode == 0, rep.err
    assert rep.out == f"read True\ntoken length {len(TOKEN)}\n", rep.out
    assert rep.err == ("retrace: warning: the environment variable API_TOKEN was redacted from this recording "
                       "and is not set here: the program gets a placeholder of the same length — set API_TOKEN "
                       "to replay with its value\n"), rep.err


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


GITHUB = "ghp_" + "Zq7Xw2Lm9Kp4Rt6Yv8Bn1Cs3Dh5Fj0Gk"


def plain_bytes(path) -> bytes:
    """A recording's bytes with every zstd-compressed frame decompressed
    (a secret must be absent from what the frames hold, not just from the file)."""
    import struct
    from retracesoftware.stream import _zstd
    data = path.read_bytes()
    out, pos = [data[:12]], 12
    while pos + 8 <= len(data):
        length, _ = struct.unpack_from("<II", data, pos)
        size = length & 0x7FFFFFFF
        payload = data[pos + 8:pos + 8 + size]
        out.append(_zstd.decompress(payload) if length & 0x80000000 else payload)
        pos += 8 + size
    return b"".join(out)
AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_secret_looking_variables_are_redacted_by_default_however_read(scenario):
    """Single reads, environ.copy(), dict(), items(), os.environb, getenv,
    and a recorded Python child: no secret value in any recording."""
    s = scenario("""
        import os, subprocess, sys, time
        a = os.environ["GITHUB_TOKEN"]
        b = os.environ.copy()["AWS_SECRET_ACCESS_KEY"]
        c = dict(os.environ)["MY_PASSWORD"]
        d = [v for k, v in os.environ.items() if k == "DATABASE_URL"][0]
        e = os.environb[b"GITHUB_TOKEN"]
        f = os.getenv("AWS_SECRET_ACCESS_KEY")
        print(len(a), len(b), len(c), d.split("@")[1], len(e), len(f), time.time(), flush=True)
        out = subprocess.run([sys.executable, "-c",
                              "import os, time; print(len(os.environ['GITHUB_TOKEN']), time.time())"],
                             capture_output=True, text=True).stdout
        print("child", out.strip())
    """)
    env = {"GITHUB_TOKEN": GITHUB, "AWS_SECRET_ACCESS_KEY": AWS, "MY_PASSWORD": "hunter2-pw",
           "DATABASE_URL": "postgres://bob:s3cr3t-db-pw@db.example/x"}
    rec = s.record(env=env)
    assert rec.returncode == 0, rec.err
    files = [s.recording] + sorted((s.dir / "run.bin.children").glob("*.bin"))
    assert len(files) == 2
    for path in files:
        data = plain_bytes(path)
        for secret in (GITHUB, AWS, "hunter2-pw", "s3cr3t-db-pw"):
            assert secret.encode() not in data, (path, secret)
    assert b"db.example" in plain_bytes(s.recording)      # only the password part of a URL
    # (the child's recorded -c code runs on replay without --trust: the
    # replaying parent, whose own source is checked, passes exactly that code)
    rep = s.replay(env=env)
    assert rep.returncode == 0 and rep.stdout == rec.stdout and rep.err == "", rep.err
    rep = s.replay()
    assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.err
    warned = [line.split()[5] for line in rep.err.splitlines()]
    assert sorted(warned) == ["AWS_SECRET_ACCESS_KEY", "DATABASE_URL", "GITHUB_TOKEN", "MY_PASSWORD"], rep.err


def test_no_redact_and_the_toml_setting(scenario):
    s = scenario("""
        import os
        print(len(os.environ["SOME_TOKEN"]), len(os.environ["PLAIN_THING"]))
    """)
    env = {"SOME_TOKEN": "visible-token-123", "PLAIN_THING": "plain-value-456"}
    rec = s.record(env=env, options=("--no-redact", "SOME_TOKEN"))
    assert rec.returncode == 0, rec.err
    data = plain_bytes(s.recording)
    assert b"visible-token-123" in data and b"plain-value-456" in data
    s.write(".retrace/redact.toml", 'redact = ["PLAIN_THING"]\n')
    rec = s.record(env=env)
    data = plain_bytes(s.recording)
    assert b"visible-token-123" not in data and b"plain-value-456" not in data


URLLIB_PROGRAM = """
    import os, time, urllib.request
    req = urllib.request.Request(os.environ["TEST_SERVER"])
    req.add_header("Authorization", "token " + os.environ["GITHUB_TOKEN"])
    with urllib.request.urlopen(req) as resp:
        print(resp.status, resp.read().decode(), time.time())
"""


def test_urllib_with_github_token_replays_with_and_without_it(scenario):
    import http.server
    import random
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            body = f"hello {random.random()}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        s = scenario(URLLIB_PROGRAM)
        env = {"GITHUB_TOKEN": GITHUB, "TEST_SERVER": f"http://127.0.0.1:{server.server_port}/x"}
        rec = s.record(env=env)
        assert rec.returncode == 0 and rec.out.startswith("200 hello"), rec.err
        assert seen == [f"token {GITHUB}"]        # the program really sent it
        assert GITHUB.encode() not in plain_bytes(s.recording)
        rep = s.replay(env=env)
        assert rep.returncode == 0 and rep.stdout == rec.stdout and rep.err == "", rep.err
        rep = s.replay(env={"TEST_SERVER": env["TEST_SERVER"]})
        assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.err
        assert rep.err.count("retrace: warning:") == 1 and "GITHUB_TOKEN" in rep.err, rep.err
        assert len(seen) == 1                     # replays are offline
    finally:
        server.shutdown()
