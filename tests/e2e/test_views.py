"""events / diff / fork over real recordings (issue #21), through the CLI."""
import json
import sys

import pytest

from retrace_testing import run

SOCKET_PROGRAM = """
import os, socket, struct, threading
FAIL = os.environ.get("RESET_IT") == "1"
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
ready = threading.Event()
def serve():
    conn, _ = srv.accept()
    if FAIL:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()            # RST: the client's recv raises ConnectionResetError
    else:
        conn.sendall(b"hello from server")
        conn.close()
t = threading.Thread(target=serve)
t.start()
c = socket.create_connection(("127.0.0.1", port))
t.join()
try:
    data = c.recv(100)
    print("got", data)
except ConnectionResetError as e:
    print("connection reset:", e)
    with open("error.log", "w") as log:       # the error path asks other questions
        log.write(str(e))
    raise SystemExit(2)
finally:
    c.close()
print("done")
"""


def cli(scenario_dir, *args):
    return run([sys.executable, "-m", "retracesoftware", *args], scenario_dir)


def test_events_threaded_socket_filters_and_json(scenario):
    s = scenario(SOCKET_PROGRAM)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    out = cli(s.dir, "events", str(s.recording))
    assert out.returncode == 0, out.err
    lines = out.out.splitlines()[1:]
    assert any("_socket.socket.connect(('127.0.0.1'," in l for l in lines)     # argument summary
    assert any("os._Environ.__getitem__('RESET_IT') !! raise KeyError" in l for l in lines)
    t1 = cli(s.dir, "events", str(s.recording), "--thread", "1").out.splitlines()[1:]
    assert t1 and all(l.split()[1].endswith("/1") for l in t1)
    assert any("_accept" in l for l in t1) and not any("recv" in l for l in t1)
    recv = cli(s.dir, "events", str(s.recording), "--grep", "RECV").out.splitlines()[1:]
    assert len(recv) == 1 and "b'hello from server'" in recv[0] and recv[0].split()[1].endswith("/0")
    js = cli(s.dir, "events", str(s.recording), "--json", "--kind", "call")
    rows = [json.loads(l) for l in js.out.splitlines()]
    assert rows and all(r["kind"] == "call" for r in rows)
    assert {r["thread"] for r in rows} == {0, 1}
    bad = cli(s.dir, "events", str(s.recording), "--kind", "nope")
    assert bad.returncode == 2 and bad.err.count("\n") == 1 and "retrace: error:" in bad.err
    # the Python API says the same
    import retracesoftware
    evs = list(retracesoftware.open_recording(str(s.recording)).events())
    assert [e.index for e in evs] == sorted(e.index for e in evs)
    assert any(e.function == "_socket.socket.recv" and e.result == b"hello from server" for e in evs)


FLAKY = """
import random, sys, time
time.time()
draw = random.random() < 0.5
with open(__file__) as f:
    f.read()
if draw:
    print("fail"); sys.exit(1)
print("pass")
"""


def test_diff_names_the_random_draw_of_a_flaky_run(scenario, tmp_path):
    s = scenario(FLAKY)
    by_code = {}
    for i in range(16):
        s.recording = tmp_path / f"run{i}.bin"
        r = s.record()
        by_code.setdefault(r.returncode, s.recording)
        if len(by_code) == 2:
            break
    assert set(by_code) == {0, 1}
    same = cli(s.dir, "diff", str(by_code[0]), str(by_code[0]))
    assert same.returncode == 0 and same.out.startswith("equivalent"), same.out + same.err
    d = cli(s.dir, "diff", str(by_code[0]), str(by_code[1]))
    assert d.returncode == 1, d.err
    assert "likely cause: _random.Random.getrandbits" in d.out or "likely cause: _random.Random" in d.out, d.out
    assert "exit codes: A 0, B 1" in d.out
    assert "time.time" not in d.out.split("likely cause")[1].splitlines()[0]
    js = json.loads(cli(s.dir, "diff", str(by_code[0]), str(by_code[1]), "--json").out)
    assert js["likely_cause"]["a"]["function"].startswith("_random.Random")
    assert js["exit_codes"] == {"a": 0, "b": 1}


# PYVERSIONS: on 3.13.0 the forked run asks another question at event 38
# (os.environ read where the recording closes the epoll): goes live early.
@pytest.mark.xfail(sys.version_info >= (3, 13), strict=False,
                   reason="3.13: fork goes live before the forked event (not yet analysed)")
def test_fork_recv_error_takes_the_error_path_live_and_records(scenario, tmp_path):
    s = scenario(SOCKET_PROGRAM)
    assert s.record().returncode == 0
    live = s.plain(env={"RESET_IT": "1"})         # what the program prints when really reset
    assert live.returncode == 2 and live.out.startswith("connection reset:"), live.out + live.err
    recv = [json.loads(l) for l in cli(s.dir, "events", str(s.recording), "--json", "--grep",
                                       "socket.recv").out.splitlines()]
    assert len(recv) == 1
    forked = tmp_path / "forked.bin"
    f = cli(s.dir, "fork", str(s.recording), "--at", str(recv[0]["index"]),
            "--raise", 'ConnectionResetError(104, "Connection reset by peer")', "--record", str(forked))
    assert f.returncode == live.returncode, f.err
    assert f.stdout == live.stdout
    assert "raises ConnectionResetError(104, 'Connection reset by peer') instead of b'hello from server'" in f.err
    assert "live from event" in f.err and "posix.open" in f.err, f.err    # error.log: not in the recording
    assert (s.dir / "error.log").read_text() == "[Errno 104] Connection reset by peer"
    # the forked run is a recording: it replays faithfully
    (s.dir / "error.log").unlink()
    s.recording = forked
    replay = s.replay()
    assert replay.returncode == 2 and replay.stdout == f.stdout, replay.err
    assert not (s.dir / "error.log").exists()        # replayed, not re-done
    # and diffs against the original
    d = cli(s.dir, "diff", str(tmp_path / "run.bin"), str(forked))
    assert d.returncode == 1 and "_socket.socket.recv" in d.out and "exit codes: A 0, B 2" in d.out, d.out


def test_fork_usage_errors(scenario):
    s = scenario("import time\nprint(time.time())\n")
    assert s.record().returncode == 0
    for args, needle in ((["--at", "1", "--raise", "__import__('os').system('true')"], "not a class name"),
                         (["--at", "1", "--raise", "ValueError(open('x'))"], "literals"),
                         (["--at", "999999", "--result", "1"], "no event 999999"),
                         (["--at", "1"], "needs --result"),
                         (["--at", "1", "--result", "{bad"], "JSON")):
        r = cli(s.dir, "fork", str(s.recording), *args)
        assert r.returncode == 2 and needle in r.err and r.err.count("\n") == 1, (args, r.err)


def test_divergence_names_the_argument_summary(scenario):
    s = scenario("import os\nos.stat('first.txt') if os.path.exists('first.txt') else None\n"
                 "print(os.environ.get('HOME') is not None)\n")
    (s.dir / "first.txt").write_text("x")
    assert s.record().returncode == 0
    s.script.write_text("import os\nos.stat('other.txt') if os.path.exists('first.txt') else None\n"
                        "print(os.environ.get('HOME') is not None)\n")
    r = s.replay("--force")
    assert r.returncode == 3
    assert "expected call posix.stat('first.txt')" in r.err and "args fingerprint" not in r.err, r.err
    rows = [json.loads(l) for l in cli(s.dir, "events", str(s.recording), "--json", "--grep",
                                       "_Environ.__getitem__").out.splitlines()]
    assert [r["args"] for r in rows] == ["'HOME'"]      # the name only: the value is the result


def test_fork_blame_finds_the_deciding_draw(scenario):
    s = scenario(FLAKY)
    code = s.record().returncode
    assert code in (0, 1)
    r = cli(s.dir, "fork", str(s.recording), "--blame", "--function", "_random.Random.random",
            "--result", "0.9", "--json")
    assert r.returncode == 0, r.err
    rows = json.loads(r.out)
    assert len(rows) == 1 and "blame 1/1" in r.err
    assert rows[0]["changes_outcome"] == (code == 1)      # 0.9 passes: only a failed run changes
