"""Cost of going back in the replay debugger (docs/DEBUGGING.md, issue 18).

    python benchmarks/bench_debugger.py [CALLS]

Records a program making CALLS clock reads (about 5 tape events each: the
default 200000 gives about 1M events), then measures: the plain replay, a
replay under the debugger (tracing every line), and one DAP ``stepBack``
from a breakpoint at the end (the request until the ``stopped`` event), and
the peak memory (max RSS) of the replay process in each case.
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
    m = re.search(r"events:\s*(\d+)", info)
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

    dap = DapClient(d, env=env)
    try:
        dap.start(rec, breakpoints=[6], source=os.path.join(d, "app.py"))
        t = time.perf_counter()
        stop = dap.stopped()
        print(f"DAP: launch to the breakpoint at the end: {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        dap.request("stepBack", {"threadId": stop["threadId"]})
        dap.stopped()
        print(f"DAP: one stepBack (re-execution to the previous line): {time.perf_counter() - t:.2f} s")
        frame = dap.top_frame(stop["threadId"])
        print(f"  landed at line {frame['line']}, i = {dap.evaluate('i', frame['id'])}")
    finally:
        dap.close()


if __name__ == "__main__":
    main()
