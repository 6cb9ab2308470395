"""Recording size and record CPU with and without compression.

    python benchmarks/bench_compress.py [--python PY ...] [--only files,sqlite] [--repeat 3]

For each workload of run.py (full N unless --quick) and each interpreter given
(default: this one), records it `--repeat` times with `--no-compress` and with
the default (zstd per frame), alternating, and prints the recording's bytes and
the record run's CPU seconds (user + system of the whole process, flusher
thread included: where the compression runs) — medians. An interpreter whose
retracesoftware has no --no-compress (before compression existed) is run
without it only. CPU time, not wall time: the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import WORKLOADS, WORKLOADS_DIR, tree_bytes  # noqa: E402


def record(py, workload, n, compress, backend):
    d = tempfile.mkdtemp(prefix="retrace-zbench-")
    rec = os.path.join(d, "run.bin")
    argv = [py, "-m", "retracesoftware", "--recording", rec]
    if not compress:
        argv.append("--no-compress")
    argv += ["--", py, os.path.join(WORKLOADS_DIR, workload.file), str(n)]
    env = dict(os.environ, RETRACE_BACKEND=backend)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, env=env, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{workload.name}: record failed: {done.stderr.decode()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    size = tree_bytes(d)
    subprocess.run(["rm", "-rf", d])
    return size, cpu


def has_no_compress(py):
    out = subprocess.run([py, "-m", "retracesoftware", "--help"], capture_output=True, text=True).stdout
    return "--no-compress" in out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", action="append")
    ap.add_argument("--only", default="files,sqlite,http,threads_lock")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", default="cpp")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    pys = a.python or [sys.executable]
    names = a.only.split(",")
    print(f"{'workload':<13} {'interpreter':<28} {'mode':<11} {'bytes':>12} {'record CPU s':>12}")
    for w in WORKLOADS:
        if w.name not in names:
            continue
        n = w.quick_n if a.quick else w.n
        for py in pys:
            modes = [False, True] if has_no_compress(py) else [None]
            runs = {m: [] for m in modes}
            for _ in range(a.repeat):
                for m in modes:
                    runs[m].append(record(py, w, n, m is not False, a.backend))
            for m in modes:
                size = statistics.median(s for s, _ in runs[m])
                cpu = statistics.median(c for _, c in runs[m])
                label = {None: "(before)", False: "no-compress", True: "zstd"}[m]
                print(f"{w.name:<13} {py[-28:]:<28} {label:<11} {int(size):>12} {cpu:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
