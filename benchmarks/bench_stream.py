"""Stream layer benchmark: encode cost per small event, read throughput,
bytes per event on a mixed stream, for each available backend.

    python benchmarks/bench_stream.py [--n 1000000]

Encode cost is measured as (time of a loop calling writer.write(v)) minus
(time of the same loop calling a no-op C function with the same argument),
divided by the number of events: the cost the stream adds per event.
"""
import argparse
import importlib
import os
import tempfile
import time


def backends():
    out = []
    for name in ("retracesoftware.stream._stream", "retracesoftware.stream._python"):
        try:
            out.append(importlib.import_module(name))
        except ImportError as e:
            print(f"# {name}: unavailable ({e})")
    return out


def timed(fn):
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def encode_costs(impl, n, tmp):
    w = impl.StreamWriter(os.path.join(tmp, "enc.bin"), {}, buffer_size=1 << 20)
    bound = object()
    w.bind(bound)
    cases = {"int": 12345, "float": 3.25, "short str": "abc", "interned str": "hello",
             "bound handle": bound, "none": None}
    noop = id  # a C function taking one argument: the loop's own cost
    rows = []
    for label, v in cases.items():
        write = w.write
        rng = range(n)

        def loop_write():
            for _ in rng:
                write(v)

        def loop_base():
            for _ in rng:
                noop(v)
        t = timed(loop_write) - timed(loop_base)
        rows.append((label, t / n * 1e9))
    w.close()
    return rows


def mixed_stream(impl, path, n):
    w = impl.StreamWriter(path, {"bench": True}, thread_id=lambda: 1)
    f = object()
    w.bind(f)
    t0 = time.perf_counter()
    for i in range(n):
        w.write("CALL", "time.time", i & 0xFFFF)
        w.write("RESULT", 1700000000.0 + i)
        if i % 10 == 0:
            w.write("CALL", "read", f, 4096)
            w.write("RESULT", b"x" * 64)
        if i % 50 == 0:
            w.write(("stat", 33188, 1, 2, 0, 0, 4096, 1.0, 2.0, 3.0))
    events = w.events
    w.close()
    t = time.perf_counter() - t0
    return events, os.path.getsize(path), t


def read_all(impl, path):
    r = impl.StreamReader(path)
    r.bind(object())
    n = 0
    t0 = time.perf_counter()
    try:
        while True:
            r.read()
            n += 1
    except EOFError:
        pass
    return n, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for impl in backends():
            name = "cpp" if impl.__name__.endswith("_stream") else "python"
            n = args.n if name == "cpp" else max(args.n // 10, 1000)
            print(f"\n## backend {name}")
            print(f"{'event':<16}{'encode ns/event':>18}")
            for label, ns in encode_costs(impl, n, tmp):
                print(f"{label:<16}{ns:>18.1f}")
            path = os.path.join(tmp, f"mixed-{name}.bin")
            events, size, wt = mixed_stream(impl, path, n // 4)
            nread, rt = read_all(impl, path)
            results[name] = path
            print(f"mixed stream: {events} events, {size} bytes, {size / events:.2f} bytes/event, "
                  f"write {events / wt / 1e6:.2f} M events/s, read {nread / rt / 1e6:.2f} M values/s "
                  f"({size / rt / 1e6:.1f} MB/s)")
        if len(results) == 2:
            a, b = (open(results[k], "rb").read() for k in ("cpp", "python"))
            print(f"\nmixed streams byte-identical between backends (same events): "
                  f"{'n/a (different n)' if len(a) != len(b) else a == b}")


if __name__ == "__main__":
    main()
