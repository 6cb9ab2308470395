"""Cost of going back in the replay debugger (docs/DEBUGGING.md, issue 18).

    python benchmarks/bench_debugger.py [CALLS]

Records a program making CALLS clock reads (about 5 tape events each: the
default 200000 gives about 1M events), then measures: the plain replay, a
replay under the debugger (tracing every line), and one DAP ``stepBack``
from a breakpoint at the end (the request until the ``stopped`` event) with
checkpoints (the default) and with RETRACE_CHECKPOINTS=0 (re-execution from
the start), the checkpoints' counters (how many, fork time) and memory (PSS
and private pages of the frozen forks), and the peak memory (max RSS) of the
replay process.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from dap_client import DapClient  # noqa: E402

PROGRAM = """\
import time
calls = {calls}
total = 0.0
for i in range(calls):
    total += time.time()
marker = total
print("events done", calls)
"""


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    d = tempfile.mkdtemp(prefix="retrace-bench-dbg-")
    with open(os.path.join(d, "app.py"), "w") as fh:
        fh.write(PROGRAM.format(calls=calls))
    rec = os.path.join(d, "run.bin")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONHASHSEED", None)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "retracesoftware", "--recording", rec, "--", "python", "app.py"],
                   cwd=d, env=env, check=True, stdout=subprocess.DEVNULL)
    print(f"record: {time.perf_counter() - t:.2f} s, {os.path.getsize(rec)} bytes")
    info = subprocess.run([sys.executable, "-m", "retracesoftware", "inspect", rec], cwd=d, env=env,
                          capture_output=True, text=True).stdout
    m = re.search(r"events:\s*([\d,]+)", info)
    print(f"events: {m.group(1) if m else '?'}")

    def timed_replay(extra_env=None, label=""):
        e = dict(env, **(extra_env or {}))
        t = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "retracesoftware",
                              "--recording", rec], cwd=d, env=e, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        _, err = p.communicate()
        rss = err.strip().splitlines()[-1]
        print(f"{label}: {time.perf_counter() - t:.2f} s, max RSS {int(rss) // 1024} MB")

    timed_replay(label="replay (plain)")
    # The debugger with no breakpoint: the engine traces and counts every line.
    timed_replay({"RETRACE_DEBUG_STATE": '{"travel": {"kind": "position", "target": [0, 999999999]}}'},
                 label="replay under the debugger (every line traced, no stop)")

    # One stepBack at the end, with checkpoints (the default) and without
    # (RETRACE_CHECKPOINTS=0: every trip back re-executes from the start).
    for label, extra in (("checkpoints", {}), ("re-execution", {"RETRACE_CHECKPOINTS": "0"})):
        dap_step_back(d, rec, dict(env, **extra), label)


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def _rollup(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    out[parts[0][:-1]] = int(parts[1])
    except OSError:
        pass
    return out


def dap_step_back(d, rec, env, label):
    dap = DapClient(d, env=env)
    long = 900
    try:
        dap.start(rec, breakpoints=[6], source=os.path.join(d, "app.py"))
        t = time.perf_counter()
        stop = dap.wait_event("stopped", timeout=long)["body"]
        print(f"[{label}] DAP: launch to the breakpoint at the end: {time.perf_counter() - t:.2f} s")
        supervisor = next(e["body"]["systemProcessId"] for e in dap.events if e["event"] == "process")
        for n in (1, 2):
            t = time.perf_counter()
            dap.request("stepBack", {"threadId": stop["threadId"]}, timeout=long)
            stop = dap.wait_event("stopped", timeout=long)["body"]
            took = time.perf_counter() - t
            frame = dap.top_frame(stop["threadId"])
            print(f"[{label}] DAP: stepBack #{n}: {took:.2f} s, landed at line {frame['line']}, "
                  f"i = {dap.evaluate('i', frame['id'])}")
        frame = dap.top_frame(stop["threadId"])
        stats = dap.evaluate("__import__('retracesoftware.debugger.checkpoints').debugger.checkpoints.stats",
                             frame["id"])
        active = int(dap.evaluate("__import__('os').getpid()", frame["id"]))
        print(f"[{label}] checkpoint counters: {stats}")
        rss_active = _rollup(active).get("Rss", 0)
        cps = [p for p in _children(supervisor) if p != active]
        pss = [_rollup(p).get("Pss", 0) for p in cps]
        private = [_rollup(p).get("Private_Dirty", 0) + _rollup(p).get("Private_Clean", 0) for p in cps]
        if cps:
            print(f"[{label}] {len(cps)} live checkpoints: PSS {sum(pss) // 1024} MB in all "
                  f"({sum(pss) // len(cps) // 1024} MB each on average), private "
                  f"{sum(private) // 1024} MB in all; the active replay's RSS {rss_active // 1024} MB")
    finally:
        dap.close()
    left = [p for p in _children(supervisor)] if os.path.exists(f"/proc/{supervisor}") else []
    print(f"[{label}] processes left after disconnect: {len(left)}")


if __name__ == "__main__":
    main()
