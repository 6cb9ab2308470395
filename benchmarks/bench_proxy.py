"""Overhead of the proxy engine per boundary call, per backend of the layers below.

    python benchmarks/bench_proxy.py [--calls N]

For each backend (RETRACE_BACKEND=cpp, python; each in a subprocess) it times
N calls of ``time.time`` (a trivial external function):

* plain           the unpatched function
* record/null     through System's record gateway, writing to a sink that
                  does nothing (a native ``constantly(None)``): the engine's
                  own cost (phase check, fingerprint, result check, calls)
* record/memory   the same, writing to MemoryWriter (a Python test backend:
                  its encoding dominates; the real stream's writer is C++)
* replay/memory   replaying those N calls from a MemoryReader
* record/stream   recording to the real `retracesoftware.stream.StreamWriter`
                  (a temp file; background flusher), best of 3 runs of N
* replay/stream   replaying those 3N calls from a StreamReader

and prints ns per call, overhead over plain, and ratios. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def measure(calls: int) -> dict:
    from retracesoftware import functional, utils
    from retracesoftware.proxy import MemoryReader, MemoryWriter, System

    target = time.time

    class NullWriter:
        write = bind = unbind = flush = close = functional.constantly(None)

    def loop(fn, n):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        return (time.perf_counter_ns() - t0) / n

    def best(fn, n, repeat=3):
        return min(loop(fn, n) for _ in range(repeat))

    out = {"backend_utils": utils.BACKEND, "backend_functional": functional.BACKEND}
    out["plain"] = best(target, calls)

    system = System("record", writer=NullWriter())
    wrapped = system.patch_function(target, "time.time")
    with system.enable():
        out["record/null"] = best(wrapped, calls)

    writer = MemoryWriter()
    system = System("record", writer=writer)
    wrapped = system.patch_function(target, "time.time")
    with system.enable():
        out["record/memory"] = loop(wrapped, calls)

    replayer = System("replay", reader=MemoryReader(writer))
    wrapped = replayer.patch_function(target, "time.time")
    with replayer.enable():
        out["replay/memory"] = loop(wrapped, calls)
    replayer.finish()
    out["events_per_call"] = writer.events / calls

    try:
        from retracesoftware import stream
    except ImportError:                     # stream layer not installed
        return out
    out["backend_stream"] = stream.BACKEND
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.bin")
        swriter = stream.StreamWriter(path, {"bench": "proxy"})
        system = System("record", writer=swriter)
        wrapped = system.patch_function(target, "time.time")
        with system.enable():
            out["record/stream"] = best(wrapped, calls)
        system.finish()
        swriter.close()
        out["bytes_per_call"] = os.path.getsize(path) / (3 * calls)
        reader = stream.StreamReader(path)
        replayer = System("replay", reader=reader)
        wrapped = replayer.patch_function(target, "time.time")
        with replayer.enable():
            out["replay/stream"] = loop(wrapped, 3 * calls)
        replayer.finish()
        reader.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.calls)))
        return
    rows = []
    for backend in ("cpp", "python"):
        env = dict(os.environ, RETRACE_BACKEND=backend)
        proc = subprocess.run([sys.executable, __file__, "--child", "--calls", str(args.calls)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{backend}: failed\n{proc.stderr}", file=sys.stderr)
            continue
        rows.append((backend, json.loads(proc.stdout.strip().splitlines()[-1])))
    print(f"proxy overhead per call of time.time(), {args.calls} calls, best of 3 (record/null, record/stream)")
    print(f"{'backend':8} {'plain':>7} {'rec/null':>8} {'+ns':>6} {'rec/mem':>8} {'+ns':>7} "
          f"{'rec/stream':>10} {'+ns':>6} {'ratio':>6} {'B/call':>6} {'rp/mem':>7} {'rp/stream':>9}")
    for backend, r in rows:
        plain = r["plain"]
        stream = r.get("record/stream", float("nan"))
        print(f"{backend:8} {plain:7.1f} {r['record/null']:8.1f} {r['record/null'] - plain:6.1f} "
              f"{r['record/memory']:8.1f} {r['record/memory'] - plain:7.1f} "
              f"{stream:10.1f} {stream - plain:6.1f} {stream / plain:6.2f} "
              f"{r.get('bytes_per_call', float('nan')):6.1f} {r['replay/memory']:7.1f} "
              f"{r.get('replay/stream', float('nan')):9.1f}")
    print("ns per call; +ns = added over plain; B/call = recording bytes per call; "
          "rp = replay (no real call)")


if __name__ == "__main__":
    main()
