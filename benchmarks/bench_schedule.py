"""What --schedule costs: plain, record, record --schedule and the replay of
each, for the `cpu` and `threads_lock` workloads, in one run (ratios within
one run; the machine's load moves absolute numbers).

    python benchmarks/bench_schedule.py [--repeat 3] [--cpu-n 200000] [--threads-n 50000]

Each mode is a fresh subprocess timed from start to exit; the modes
alternate within each repetition so machine noise hits them alike; the
median is reported. RETRACE_BACKEND in the environment picks the backend.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(argv, cwd):
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    return elapsed, proc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu-n", type=int, default=200_000)
    parser.add_argument("--threads-n", type=int, default=50_000)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    py = args.python
    workloads = [("cpu", args.cpu_n), ("threads_lock", args.threads_n)]
    print(f"python {sys.version.split()[0]}, backend {os.environ.get('RETRACE_BACKEND', 'default')}, "
          f"repeat {args.repeat}, load {os.getloadavg()[0]:.1f}")
    print(f"{'workload':14} {'plain s':>8} {'record':>8} {'rec+sch':>8} {'replay':>8} {'rep+sch':>8} "
          f"{'rec/pl':>7} {'sch/pl':>7} {'sch/rec':>8} {'rep sch/pl':>10} faithful")
    with tempfile.TemporaryDirectory() as tmp:
        for name, n in workloads:
            script = os.path.join(HERE, "workloads", f"{name}.py")
            times = {k: [] for k in ("plain", "record", "schedule", "replay", "replay_schedule")}
            faithful = True
            for _ in range(args.repeat):
                t, _p = timed([py, script, str(n)], tmp)
                times["plain"].append(t)
                for mode, opts in (("record", []), ("schedule", ["--schedule"])):
                    rec = os.path.join(tmp, f"{name}-{mode}.bin")
                    t, r = timed([py, "-m", "retracesoftware", "--recording", rec, *opts, "--",
                                  py, script, str(n)], tmp)
                    times[mode].append(t)
                    t2, p = timed([py, "-m", "retracesoftware", "--recording", rec], tmp)
                    times["replay" if mode == "record" else "replay_schedule"].append(t2)
                    if r.returncode or p.returncode or r.stdout != p.stdout:
                        faithful = False
                        sys.stderr.write(f"{name} {mode}: record {r.returncode}, replay {p.returncode}\n"
                                         f"{p.stderr.decode(errors='replace')[-400:]}\n")
            m = {k: statistics.median(v) for k, v in times.items()}
            print(f"{name:14} {m['plain']:8.2f} {m['record']:8.2f} {m['schedule']:8.2f} {m['replay']:8.2f} "
                  f"{m['replay_schedule']:8.2f} {m['record'] / m['plain']:7.2f} {m['schedule'] / m['plain']:7.2f} "
                  f"{m['schedule'] / m['record']:8.2f} {m['replay_schedule'] / m['plain']:10.2f} "
                  f"{'yes' if faithful else 'NO'}")


if __name__ == "__main__":
    main()
