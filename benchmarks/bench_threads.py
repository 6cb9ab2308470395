"""Cost of recording threads that synchronise through locks (issue 9).

    python benchmarks/bench_threads.py [--threads 4] [--increments 300000] [--repeat 3]

The workload: N threads each do M lock-protected increments of a shared
counter, and every 100th increment also appends to a shared list under a
second lock. It runs through the real CLI, as a user would:

* plain    ``python app.py``
* record   ``python -m retracesoftware --recording run.bin -- python app.py``
* replay   ``python -m retracesoftware --recording run.bin``

The workload times itself (``time.perf_counter`` around the threads; on
record that is the real clock, on replay the recorded value) and prints it
to stderr; the table shows that workload time for plain and record, the
whole-process wall time of all three, the ratios, the recording's size and
bytes per event, and whether the replay printed the same stdout (the final
counter and a digest of the append order). Best of --repeat runs. Nothing is
asserted; the target is record ≤ 3x plain (workload time).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

WORKLOAD = r'''
import hashlib, sys, threading, time
THREADS, INCREMENTS = {threads}, {increments}
counter = 0
appended = []
lock = threading.Lock()
list_lock = threading.Lock()

def work(k):
    global counter
    for i in range(INCREMENTS):
        with lock:
            counter += 1
        if i % 100 == 0:
            with list_lock:
                appended.append(k)

threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
t0 = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - t0
print(counter, len(appended), hashlib.sha256(bytes(appended)).hexdigest())
sys.stderr.write(f"WORKLOAD {{elapsed:.6f}}\n")
'''


def run(argv, cwd):
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err}")
    workload = None
    for line in err.splitlines():
        if line.startswith("WORKLOAD "):
            workload = float(line.split()[1])
    return wall, workload, proc.stdout


def count_events(path):
    try:
        from retracesoftware.stream import StreamReader
    except ImportError:
        return None
    n = 0
    with StreamReader(path) as reader:
        while True:
            try:
                if reader.next_kind == "binding":
                    reader.bind(object())
                else:
                    reader.read()
            except EOFError:
                return n
            n += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--increments", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    opts = ap.parse_args()
    from retracesoftware import functional, stream, utils
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "app.py"), "w") as f:
            f.write(WORKLOAD.format(threads=opts.threads, increments=opts.increments))
        rec_path = os.path.join(tmp, "run.bin")
        py = sys.executable
        results = {"plain": [], "record": [], "replay": []}
        faithful = True
        for _ in range(opts.repeat):
            plain = run([py, "app.py"], tmp)
            record = run([py, "-m", "retracesoftware", "--recording", rec_path, "--", "python", "app.py"], tmp)
            replay = run([py, "-m", "retracesoftware", "--recording", rec_path], tmp)
            faithful = faithful and replay[2] == record[2]
            results["plain"].append(plain)
            results["record"].append(record)
            results["replay"].append(replay)
        size = os.path.getsize(rec_path)
        events = count_events(rec_path)

    best = {k: (min(r[0] for r in v), min((r[1] for r in v if r[1] is not None), default=None))
            for k, v in results.items()}
    print(f"bench_threads: {opts.threads} threads x {opts.increments} lock-protected increments, "
          f"appends every 100 under a second lock; best of {opts.repeat}")
    print(f"backends: functional={functional.BACKEND} utils={utils.BACKEND} stream={stream.BACKEND}; "
          f"python {sys.version.split()[0]}")
    print(f"{'':8s} {'workload s':>11s} {'process s':>10s}")
    for k in ("plain", "record", "replay"):
        wl = best[k][1]
        print(f"{k:8s} {wl if wl is not None else float('nan'):11.3f} {best[k][0]:10.3f}")
    ratio_wl = best["record"][1] / best["plain"][1]
    print(f"record/plain (workload): {ratio_wl:.2f}x   (target <= 3x)")
    print(f"record/plain (process):  {best['record'][0] / best['plain'][0]:.2f}x")
    print(f"replay/plain (process):  {best['replay'][0] / best['plain'][0]:.2f}x")
    per_event = f", {size / events:.1f} bytes/event ({events} events)" if events else ""
    print(f"recording: {size} bytes{per_event}")
    print(f"faithful: {'yes' if faithful else 'NO'}")


if __name__ == "__main__":
    main()
