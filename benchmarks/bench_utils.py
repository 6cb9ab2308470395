"""ns added by RecordGateway / ReplayGateway around time.time, per backend.

    python benchmarks/bench_utils.py [--calls 1000000] [--repeat 5]

Prints a table: plain time.time() per call, gateway per call, and the
difference (ns added), for both backends, with the phase INTERNAL (the
recorded path: before=None, after=float, i.e. a C callable returning its
argument) and DISABLED (straight through).  Min of --repeat runs.
"""
from __future__ import annotations

import argparse
import importlib
import time
import timeit


def measure(stmt, ns, calls, repeat):
    timer = timeit.Timer(stmt, globals=ns)
    return min(timer.repeat(repeat=repeat, number=calls)) / calls * 1e9


def bench(backend, calls, repeat):
    u = importlib.import_module(f"retracesoftware.utils.{backend}")
    gate = u.Gate()
    ns = {
        "plain": time.time,
        "record": u.RecordGateway(gate, time.time, None, float, None),
        "record_bare": u.RecordGateway(gate, time.time, None, None, None),
        "replay": u.ReplayGateway(gate, time.time, time.time),
    }

    class Holder:
        method = u.RecordGateway(gate, lambda self: None, None, None, None)

        def plain_method(self):
            return None

    ns["obj"] = Holder()
    rows = []
    plain = measure("plain()", ns, calls, repeat)
    plain_m = measure("obj.plain_method()", ns, calls, repeat)
    for phase_name in ("INTERNAL", "DISABLED"):
        gate.phase = getattr(u, phase_name)
        for label, stmt, base in (
            ("RecordGateway(after=float)", "record()", plain),
            ("RecordGateway(after=None)", "record_bare()", plain),
            ("ReplayGateway(replay=time.time)", "replay()", plain),
            ("RecordGateway as method vs def", "obj.method()", plain_m),
        ):
            t = measure(stmt, ns, calls, repeat)
            rows.append((backend, phase_name, label, base, t, t - base))
    gate.phase = u.DISABLED
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'backend':8} {'phase':9} {'gateway':34} {'plain ns':>9} {'gw ns':>9} {'added ns':>9}")
    for backend in ("_utils", "_python"):
        try:
            rows = bench(backend, args.calls if backend == "_utils" else args.calls // 5, args.repeat)
        except ImportError as exc:
            print(f"{backend}: unavailable ({exc})")
            continue
        for b, phase, label, base, t, added in rows:
            name = "cpp" if b == "_utils" else "python"
            print(f"{name:8} {phase:9} {label:34} {base:9.1f} {t:9.1f} {added:9.1f}")


if __name__ == "__main__":
    main()
