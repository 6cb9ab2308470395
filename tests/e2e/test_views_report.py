"""Views computed from a recording by an instrumented replay (issue #22): ``trace``
(Chrome trace-event JSON), ``report`` (one HTML page, opened in headless
Chromium), ``summary`` (Markdown within a token budget) and ``mcp`` (an MCP
server driven by a JSON-RPC client over stdio).

Every recording here is first replayed plainly and must be faithful; the
views' own replay must be faithful too (the tracer runs outside the
recording), or the commands exit 3."""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from retrace_testing import Scenario, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

MULTI_MODULE = {
    "pkg/__init__.py": "",
    "pkg/store.py": """
        import time
        class Store:
            def __init__(self):
                self.items = {}
            def put(self, key, value):
                self.items[key] = (value, time.time())
            def get(self, key):
                return self.items[key][0]
        """,
    "pkg/service.py": """
        import random
        from pkg.store import Store
        class Service:
            def __init__(self):
                self.store = Store()
            def handle(self, n):
                for i in range(n):
                    self.store.put(i, random.random())
                return sum(self.store.get(i) for i in range(n))
        def helper(x):
            return x * 2
        """,
}

MULTI_MAIN = """
    import threading
    from pkg.service import Service, helper
    def main():
        s = Service()
        print(helper(s.handle(4)))
        t = threading.Thread(target=lambda: print("thread", s.handle(3)))
        t.start(); t.join()
    main()
    """


def _cli(*args, cwd, env=None, timeout=300):
    return run([sys.executable, "-m", "retracesoftware", *map(str, args)], cwd, env, timeout=timeout)


def _recorded(tmp_path, source, files=None, name="app.py", command=None):
    s = Scenario(tmp_path, source, name)
    for path, text in (files or {}).items():
        s.write(path, text)
    rec = s.record(command=command)
    assert rec.returncode == 0 and "retrace: error" not in rec.err, rec.err
    rep = s.replay()
    assert rep.stdout == rec.stdout and rep.returncode == rec.returncode, rep.err
    return s, rec


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi")
    s, _ = _recorded(tmp, MULTI_MAIN, MULTI_MODULE)
    return s


# ------------------------------------------------------------------ trace
_PHASES = {"X", "B", "E", "i", "I", "M", "C"}


def validate_trace(doc) -> dict:
    """Check a Chrome trace-event JSON document (JSON Object Format): every
    event's fields by phase, and per (pid, tid) that X spans and B/E pairs
    nest. Returns {(pid, tid): [X/B spans]} for further checks."""
    assert isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list)
    spans = {}
    open_be = {}
    for event in doc["traceEvents"]:
        assert isinstance(event, dict), event
        ph = event.get("ph")
        assert ph in _PHASES, event
        assert isinstance(event.get("name"), str) and event["name"], event
        assert isinstance(event.get("pid"), int) and isinstance(event.get("tid"), int), event
        if "args" in event:
            assert isinstance(event["args"], dict), event
        if ph == "M":
            assert event["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index"), event
            assert "name" in event["args"] or "sort_index" in event["args"], event
            continue
        assert isinstance(event.get("ts"), (int, float)) and event["ts"] >= 0, event
        key = (event["pid"], event["tid"])
        if ph == "X":
            assert isinstance(event.get("dur"), (int, float)) and event["dur"] >= 0, event
            spans.setdefault(key, []).append((event["ts"], event["ts"] + event["dur"], event["name"]))
        elif ph == "B":
            open_be.setdefault(key, []).append(event)
        elif ph == "E":
            assert open_be.get(key), f"E without B on {key}: {event}"
            begin = open_be[key].pop()
            assert event["ts"] >= begin["ts"], (begin, event)
            spans.setdefault(key, []).append((begin["ts"], event["ts"], begin["name"]))
        elif ph in ("i", "I"):
            assert event.get("s", "t") in ("g", "p", "t"), event
    assert not any(open_be.values()), f"B events never ended: {open_be}"
    eps = 0.002   # µs with 3 decimals: rounding of ts and dur
    for key, items in spans.items():
        stack = []
        for start, end, name in sorted(items, key=lambda s: (s[0], -s[1])):
            while stack and start >= stack[-1][1] - eps:
                stack.pop()
            if stack:
                assert end <= stack[-1][1] + eps, f"span {name} {start}-{end} overlaps {stack[-1]} on {key}"
            stack.append((start, end, name))
    return spans


def test_trace_is_valid_chrome_trace_with_project_spans_and_boundary_calls(multi):
    out = multi.dir / "trace.json.gz"
    r = _cli("trace", multi.recording, "-o", out, cwd=multi.dir)
    assert r.returncode == 0, r.err
    doc = json.load(gzip.open(out, "rt"))
    spans = validate_trace(doc)
    names = {name for items in spans.values() for _, _, name in items}
    assert {"Service.handle", "Store.put", "Store.get", "helper", "main"} <= names, names
    assert not any("threading" in n or "retrace" in n for n in names), names   # only the project's code
    assert len(spans) == 2, spans.keys()        # main thread and the thread it started
    events = doc["traceEvents"]
    boundary = [e for e in events if e["ph"] == "i"]
    assert {"time.time", "_random.Random.random"} <= {e["name"] for e in boundary}
    assert all(isinstance(e["args"]["event"], int) for e in boundary)
    assert any(e["name"] == "lock acquire" for e in boundary)
    thread_names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert "main thread (0)" in thread_names.values() and "thread 1" in thread_names.values()
    assert {e["tid"] for e in events if e["ph"] != "M"} <= set(thread_names)
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in events)
    assert doc["otherData"]["faithful"] is True

    # Filters like VizTracer's.
    out2 = multi.dir / "filtered.json"
    r = _cli("trace", multi.recording, "-o", out2, "--exclude", "pkg.store", "--max-depth", "2", cwd=multi.dir)
    assert r.returncode == 0, r.err
    doc2 = json.loads(out2.read_text())
    spans2 = validate_trace(doc2)
    names2 = {name for items in spans2.values() for _, _, name in items}
    assert "Service.handle" in names2 and not {"Store.put", "Store.get"} & names2
    assert all(e["args"]["depth"] < 2 for e in doc2["traceEvents"] if e["ph"] == "X")


def test_trace_validator_can_fail():
    """The nesting check above rejects overlapping spans and stray E events."""
    bad = {"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
                           {"ph": "X", "name": "b", "pid": 1, "tid": 1, "ts": 5, "dur": 10}]}
    with pytest.raises(AssertionError):
        validate_trace(bad)
    with pytest.raises(AssertionError):
        validate_trace({"traceEvents": [{"ph": "E", "name": "x", "pid": 1, "tid": 1, "ts": 1}]})


def test_trace_of_missing_recording_is_one_line_error(tmp_path):
    r = _cli("trace", tmp_path / "nope.bin", "-o", tmp_path / "t.json", cwd=tmp_path)
    assert r.returncode == 4 and r.err.startswith("retrace: error: recording") and r.err.count("\n") == 1, r.err
    r = _cli("trace", cwd=tmp_path)
    assert r.returncode == 2 and r.err.startswith("retrace: error:"), r.err


# ------------------------------------------------------------------ report
def _report_data(path):
    text = path.read_text()
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return text, json.loads(m.group(1).replace("<\\/", "</"))


def test_architecture_map_names_modules_and_calls_between_them(multi):
    out = multi.dir / "report.html"
    r = _cli("report", multi.recording, "-o", out, cwd=multi.dir)
    assert r.returncode == 0, r.err
    text, data = _report_data(out)
    arch = data["architecture"]
    modules = {m["name"] for m in arch["modules"]}
    assert {"pkg.service", "pkg.store", "app (__main__)"} <= modules, modules
    units = {u["id"] for m in arch["modules"] for u in m["units"]}
    assert {"pkg.service.Service", "pkg.store.Store"} <= units, units
    edges = {(e["from"], e["to"]): e["count"] for e in arch["edges"]}
    # handle() ran twice (4 and 3 items): 7 puts, 7 gets, and Service() made one Store()
    assert edges[("pkg.service.Service", "pkg.store.Store")] == 7 + 7 + 1, edges   # + Store()
    assert ("app (__main__)", "pkg.service.Service") in edges
    # self-contained: nothing is fetched (no src/href to anything, no <link>), and a CSP forbids it
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?!#)[^"'\s>]""", text) and "<link" not in text
    assert "default-src 'none'" in text
    assert "faithful replay" in text and "yes — the replay matched" in text


def _chromium(html_path, tmp_path, *extra):
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
            "--enable-logging=stderr", "--v=0", "--window-size=1300,2000", *extra, html_path.as_uri()]
    proc = subprocess.run(argv, capture_output=True, timeout=180)
    return proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def _check_in_browser(html_path, tmp_path, *, threads, modules=(), edges=()):
    dom, err = _chromium(html_path, tmp_path, "--dump-dom")
    console = [line for line in err.splitlines() if ":CONSOLE" in line]
    assert not console, console                       # no console errors (nor anything else logged)
    assert 'data-rendered="yes"' in dom, dom[:2000]   # the script ran to its end
    assert not re.search(r"<body[^>]*data-js-errors", dom)
    # timeline: one lane per thread, drawn on a sized canvas
    for thread in threads:
        assert f'<li data-thread="{thread}">' in dom, thread
    # the script sized the canvas for its lanes (the page ships height="60" and no width)
    m = re.search(r'<canvas id="timeline" height="(\d+)" width="(\d+)"', dom)
    assert m and int(m.group(1)) >= 18 + 30 * len(threads) and int(m.group(2)) > 200, m
    # architecture map: SVG boxes and edges
    for module in modules:
        assert f'data-module="{module}"' in dom, module
    for a, b in edges:
        assert re.search(f'<path class="edge" [^>]*data-from="{re.escape(a)}" data-to="{re.escape(b)}"', dom), (a, b)
    shot = tmp_path / (html_path.stem + ".png")
    _chromium(html_path, tmp_path, f"--screenshot={shot}")
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10000
    return dom


SOCKET_PROGRAM = """
    import random, socket, threading
    lock = threading.Lock()
    received = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def serve():
        for _ in range(2):
            conn, _ = srv.accept()
            with conn:
                data = conn.recv(100)
                with lock:
                    received.append(data)
                conn.sendall(data.upper())

    def client(i):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(f"hello {i} {random.random():.6f}".encode())
        print(c.recv(100).decode())
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    clients = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    t.join()
    srv.close()
    print(len(received))
    """


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_of_threaded_socket_program_renders_in_chromium(tmp_path):
    s, _ = _recorded(tmp_path, SOCKET_PROGRAM)
    out = tmp_path / "report.html"
    r = _cli("report", s.recording, "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.err
    text, data = _report_data(out)
    assert len(data["threads"]) == 4 and data["switches"]                 # thread switches
    assert any(e["k"] == "sync" and e["n"] == "lock acquire" for e in data["sample"])   # lock waits
    names = {e["n"] for e in data["sample"]}
    assert any("accept" in n for n in names) and any("recv" in n for n in names), names
    _check_in_browser(out, tmp_path, threads=["0", "1", "2", "3"], modules=["app (__main__)"])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_of_pytest_session_renders_in_chromium(tmp_path):
    s = Scenario(tmp_path, """
        import os, time
        from calc import Calculator
        def test_add():
            assert Calculator().add(2, 3) == 5
        def test_clock():
            assert Calculator().stamp() > 0
        def test_env():
            assert os.environ.get("PATH")
        """, name="test_calc.py")
    s.write("calc.py", """
        import time
        class Calculator:
            def add(self, a, b):
                return a + b
            def stamp(self):
                return time.time()
        """)
    rec = s.record(command=["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_calc.py"])
    assert rec.returncode == 0 and b"3 passed" in rec.stdout, rec.out + rec.err
    out = tmp_path / "report.html"
    r = _cli("report", s.recording, "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.err
    text, data = _report_data(out)
    units = {u["id"] for m in data["architecture"]["modules"] for u in m["units"]}
    arch = data["architecture"]
    assert arch["faithful"] is True, (arch["problem"], r.err)
    assert "calc.Calculator" in units and "test_calc" in units, (units, arch["problem"], r.err)
    assert not any(u.startswith(("_pytest", "pytest", "pluggy")) for u in units), units
    edges = {(e["from"], e["to"]) for e in data["architecture"]["edges"]}
    assert ("test_calc", "calc.Calculator") in edges, edges
    _check_in_browser(out, tmp_path, threads=["0"], modules=["calc", "test_calc"],
                      edges=[("test_calc", "calc.Calculator")])


def test_report_replay_is_faithful_when_the_program_first_imports_sysconfig(tmp_path):
    # The replay child found the library folders (sysconfig, site.USER_BASE)
    # before replaying: the program's own first import of sysconfig and
    # site.getuserbase() read PYTHONUSERBASE and HOME (recorded calls) on
    # record only, so the instrumented replay diverged at once and the map
    # was empty (a pytest session with time-machine's plugin: zoneinfo
    # imports sysconfig at start-up).
    s, _ = _recorded(tmp_path, """
        import site, sysconfig
        class Probe:
            def paths(self):
                return sysconfig.get_config_var("prefix") is not None, site.getuserbase() is not None
        print(Probe().paths())
        """)
    out = tmp_path / "report.html"
    r = _cli("report", s.recording, "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.err
    text, data = _report_data(out)
    arch = data["architecture"]
    assert arch["faithful"] is True, (arch["problem"], r.err)
    units = {u["id"] for m in arch["modules"] for u in m["units"]}
    assert "app (__main__).Probe" in units, units
    assert "arch-incomplete" not in text and "warning" not in r.err


def test_report_says_when_its_replay_could_not_run(tmp_path):
    # A replay that stops (here: the program's source changed since the
    # recording) must never give a map that looks like the run's.
    s, _ = _recorded(tmp_path, """
        class Probe:
            def run(self):
                return 42
        print(Probe().run())
        """)
    s.script.write_text(s.script.read_text() + "\n# edited\n")
    out = tmp_path / "report.html"
    r = _cli("report", s.recording, "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.err
    text, data = _report_data(out)
    arch = data["architecture"]
    assert arch["faithful"] is False and arch["problem"] and not arch["modules"], arch
    assert "id='arch-incomplete'" in text and "did not run the program to its end" in text
    assert "replay was not faithful" in r.err, r.err


# ------------------------------------------------------------------ summary
def _tokens(text):
    return -(-len(text) // 4)


def test_summary_within_budget_on_a_large_recording_and_redacted(tmp_path):
    s = Scenario(tmp_path, """
        import os, random, threading, time
        def work(n):
            total = 0.0
            for i in range(n):
                total += random.random() + time.time() % 1
                os.environ.get(f"VAR_{i % 50}")
            return total
        threads = [threading.Thread(target=work, args=(4000,)) for _ in range(3)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(round(work(3000)) > 0)
        raise ValueError(f"bad token {os.environ['APP_TOKEN']}")
        """)
    env = {"APP_TOKEN": "s3cr3t-value-0xdeadbeef"}
    rec = s.record(env=env)
    assert rec.returncode == 1 and b"s3cr3t-value" in rec.stderr, rec.err
    summaries = {}
    for budget in (300, 1500):
        out = tmp_path / f"run-{budget}.md"
        # (the small one without the replay: the walk alone, as an agent in a hurry would)
        extra = ["--no-replay"] if budget == 300 else []
        r = _cli("summary", s.recording, "-o", out, "--budget", budget, *extra, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.err
        text = out.read_text()
        summaries[budget] = text
        assert _tokens(text) <= budget, (budget, _tokens(text))
        assert "s3cr3t-value" not in text                 # redacted
        assert text.startswith("# Run: `python app.py`")
        assert "## Questions to ask" in text
    big = summaries[1500]
    assert "## Failure" in big and "ValueError: bad token" in big      # the exception and its stack
    assert 'File "' in big and "app.py" in big
    assert re.search(r"- thread 1: \d[\d,]* events", big)                 # threads
    assert "events --from" in big or "event " in big                     # questions point at events
    assert len(summaries[300]) < len(big)
    # the recording is large: tens of thousands of events
    m = re.search(r"- ([\d,]+) tape events", big)
    assert int(m.group(1).replace(",", "")) > 100000, m.group(0)


def test_summary_against_another_recording_names_the_first_difference(multi, tmp_path):
    other = Scenario(multi.dir, MULTI_MAIN)
    other.recording = multi.dir / "other.bin"
    rec = other.record()
    assert rec.returncode == 0, rec.err
    r = _cli("summary", multi.recording, "--against", other.recording, "--no-replay", cwd=multi.dir)
    assert r.returncode == 0, r.err
    assert "## Difference from the other recording" in r.out
    assert "_random.Random.random" in r.out.split("## Difference from the other recording")[1], r.out


# ------------------------------------------------------------------ mcp
def test_mcp_server_initialize_list_and_every_tool(multi, tmp_path):
    pytest.importorskip("mcp", reason="the [mcp] extra is not installed (pip install 'retracesoftware[mcp]')")
    other = multi.dir / "other.bin"
    if not other.exists():
        rec = Scenario(multi.dir, MULTI_MAIN)
        rec.recording = other
        assert rec.record().returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "retracesoftware", "mcp"], cwd=multi.dir,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ids = iter(range(1, 100))

    def request(method, params=None):
        msg = {"jsonrpc": "2.0", "id": next(ids), "method": method}
        if params is not None:
            msg["params"] = params
        proc.stdin.write((json.dumps(msg) + "\n").encode())
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline()
            assert line, proc.stderr.read().decode()
            reply = json.loads(line)
            if reply.get("id") == msg["id"]:
                assert "error" not in reply, reply
                return reply["result"]

    def call(name, **arguments):
        result = request("tools/call", {"name": name, "arguments": arguments})
        assert result.get("isError") is not True, result
        return "".join(c["text"] for c in result["content"] if c["type"] == "text")

    try:
        init = request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                      "clientInfo": {"name": "retrace-test", "version": "1"}})
        assert init["serverInfo"]["name"] == "retracesoftware" and "tools" in init["capabilities"]
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        proc.stdin.flush()
        tools = {t["name"]: t for t in request("tools/list")["tools"]}
        assert set(tools) == {"summary", "events", "diff", "stack_at", "eval_at", "fork"}
        assert "recording" in tools["events"]["inputSchema"]["properties"]

        assert call("summary", recording="run.bin", budget=500).startswith("# Run: `python app.py`")
        events = call("events", recording="run.bin", thread="1", grep="random")
        lines = events.splitlines()
        assert lines and all(re.search(r"/1 |thread 1", l) and "random" in l for l in lines), events
        index = int(lines[0].split()[0])
        assert "differ" in call("diff", a="run.bin", b="other.bin")
        stack = call("stack_at", recording="run.bin", event=index)
        assert "* " in stack and "Service.handle" in stack and "service.py" in stack, stack
        value = call("eval_at", recording="run.bin", event=index, expression="n * 10")
        assert value.startswith("n * 10 = 30"), value               # the thread's handle(3)
        forked = call("fork", recording="run.bin", at=index, result="0.5")
        try:
            import retracesoftware.views.fork  # noqa: F401
        except Exception:     # not installed, or not importable on this Python
            assert forked.startswith("error: fork is not available"), forked
        else:
            # the thread's first random.random() is now 0.5: handle(3) sums 0.5 + the two recorded draws
            assert forked.startswith("exit code 0") and "thread " in forked, forked
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_report_lists_what_the_run_read_and_wrote(tmp_path):
    s, _ = _recorded(tmp_path, """
        import os, random, socket, sqlite3, subprocess, threading
        with open("data.txt", "w") as f:
            f.write("x" * random.randint(1, 9))
        print(open("data.txt").read(), os.environ.get("HOME"))
        db = sqlite3.connect(":memory:")
        db.execute("CREATE TABLE t (a)")
        print(db.execute("SELECT count(*) FROM t").fetchall())
        print(subprocess.run(["echo", "hi"], capture_output=True).stdout)
        srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
        def serve():
            c, _ = srv.accept(); c.sendall(c.recv(10)); c.close()
        t = threading.Thread(target=serve); t.start()
        c = socket.create_connection(srv.getsockname()); c.sendall(b"ping"); print(c.recv(10)); t.join()
        """)
    out = tmp_path / "report.html"
    r = _cli("report", s.recording, "-o", out, "--no-replay", cwd=tmp_path)
    assert r.returncode == 0, r.err
    text, _ = _report_data(out)
    rows = re.findall(r"<tr><td>(\w+)</td><td><code>([^<]*)</code></td>", text)
    assert ("write", "data.txt") in rows and ("read", "data.txt") in rows, rows
    assert ("read", "HOME") in rows, rows
    assert ("run", "[&#x27;echo&#x27;, &#x27;hi&#x27;]") in rows, rows
    assert ("query", "CREATE TABLE t (a)") in rows, rows
    assert any(d == "connect" and w.startswith("127.0.0.1:") for d, w in rows), rows
