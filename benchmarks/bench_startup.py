"""Start-up cost of retrace: ``python -c pass`` plain, recorded and replayed.

    python benchmarks/bench_startup.py [--repeat 11] [--python PY ...] [--json]

For each interpreter given (default: this one; give two — e.g. a venv with
main installed and one with a branch — to compare them in one run) and each
mode, in turn, ``--repeat`` times (modes and interpreters interleaved, so
machine noise hits every row alike):

  plain           PY -c pass
  record          PY -m retracesoftware --recording R -- PY -c pass
                  (PYTHONHASHSEED unset: includes the hash-seed re-exec)
  record, seeded  the same with PYTHONHASHSEED=1 in the environment (no re-exec)
  replay          PY -m retracesoftware --recording R --trust
                  (R made by "record": the replay restarts itself with R's seed)
  replay, seeded  the replay of "record, seeded"'s recording with PYTHONHASHSEED=1
                  in the environment: no restart (a replayed child process, or a
                  user who pins the seed)

Each run is a fresh process, started in an empty folder. Wall = seconds from spawn to exit; CPU =
user+sys of the child (the re-exec'd image counts: same pid). Printed:
median of each, and "+ms" = the mode's median minus plain's median in the
same run. The issue's target is record and replay each <= 60 ms over plain.
Only numbers from one run compare (the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("plain", "record", "record, seeded", "replay", "replay, seeded")


def run_once(py: str, mode: str, recording: str, cwd: str | None = None) -> tuple[float, float]:
    env = dict(os.environ)
    env.pop("PYTHONHASHSEED", None)
    env.setdefault("RETRACE_BACKEND", "cpp")
    if mode == "plain":
        argv = [py, "-c", "pass"]
    elif mode.startswith("record"):
        argv = [py, "-m", "retracesoftware", "--recording", recording, "--", py, "-c", "pass"]
        if mode == "record, seeded":
            env["PYTHONHASHSEED"] = "1"
    else:
        argv = [py, "-m", "retracesoftware", "--recording", recording, "--trust"]
        if mode == "replay, seeded":
            env["PYTHONHASHSEED"] = "1"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} with {py} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--python", action="append", help="interpreter with retracesoftware installed (repeatable)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    pythons = a.python or [sys.executable]
    tmp = tempfile.mkdtemp(prefix="retrace-startup-")
    recs = {(py, seeded): os.path.join(tmp, f"run{i}{'-seeded' if seeded else ''}.bin")
            for i, py in enumerate(pythons) for seeded in (False, True)}
    # Every run starts in an empty folder: `python -m` puts the current
    # folder first on sys.path, and the first import lists it (~5 ms in a
    # /tmp of 8000 entries), which would measure the caller's folder.
    cwd = os.path.join(tmp, "cwd")
    os.mkdir(cwd)
    times: dict = {(py, m): ([], []) for py in pythons for m in MODES}
    for _ in range(a.repeat):
        for py in pythons:
            for mode in MODES:
                wall, cpu = run_once(py, mode, recs[py, mode.endswith("seeded")], cwd)
                times[py, mode][0].append(wall)
                times[py, mode][1].append(cpu)
    result = []
    for py in pythons:
        plain_w = statistics.median(times[py, "plain"][0])
        plain_c = statistics.median(times[py, "plain"][1])
        for mode in MODES:
            w = statistics.median(times[py, mode][0])
            c = statistics.median(times[py, mode][1])
            result.append({"python": py, "mode": mode, "wall_ms": w * 1e3, "cpu_ms": c * 1e3,
                           "wall_over_plain_ms": (w - plain_w) * 1e3, "cpu_over_plain_ms": (c - plain_c) * 1e3,
                           "wall_ratio": w / plain_w, "runs": len(times[py, mode][0])})
    if a.json:
        json.dump({"load": os.getloadavg(), "results": result}, sys.stdout, indent=1)
        print()
        return 0
    print(f"python -c pass, median of {a.repeat}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'python':40} {'mode':15} {'wall ms':>8} {'+ms':>7} {'ratio':>6} {'cpu ms':>8} {'+ms':>7}")
    for r in result:
        print(f"{r['python'][-40:]:40} {r['mode']:15} {r['wall_ms']:8.1f} {r['wall_over_plain_ms']:7.1f} "
              f"{r['wall_ratio']:6.2f} {r['cpu_ms']:8.1f} {r['cpu_over_plain_ms']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
