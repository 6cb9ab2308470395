"""Where the ns of one recorded (and one replayed) time.time() go, piece by piece.

    python benchmarks/bench_record_call.py [--calls 1000000] [--repeat 5]

C++ backend, in one process, min of --repeat CPU-time (process_time) timings of --calls calls each:

  plain                 time.time()
  fingerprint()         the args fingerprint of a no-arg call (the gateway uses a precomputed one)
  fingerprint(1.5)      ... of a one-float call
  thread id lookup      the install layer's logical thread id (ThreadRegistry.current:
                        compose(dict.__getitem__, get_ident)), called by the writer on every write
  write, no thread_id   StreamWriter.write("CALL", name, fp, "RESULT", 1.5) with thread_id=None
  write, thread_id      the same with thread_id= that lookup, asked on every write
  write, cached tid     the same with cache_thread_id=True (as recording does: asked once per thread)
  gateway, write=noop   RecordCallGateway around time.time with a do-nothing write
  recorded, uncached    RecordCallGateway around time.time writing to a StreamWriter asking thread_id each time
  recorded call         the same with cache_thread_id=True (what a recording does)
  recorded, as recording  the same with the recording's writer settings (64 KiB buffers, flushed
                        every 0.1 s, zstd-compressed by the flusher thread: its CPU counts)
    caller's thread only  the same, CPU of the calling thread only (thread_time): the cost the
                        program's thread pays; the difference is the flusher's compression
  replayed call         ReplayCallGateway + StreamReader.take_call of the same tape

"added" is the row minus plain where the row includes the real time.time() call.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import timeit


def t(stmt, ns, calls, repeat, timer=time.process_time):
    # CPU time of this process (the machine is usually shared: wall time
    # would count other processes' turns), best of `repeat`.
    return min(timeit.Timer(stmt, globals=ns, timer=timer).repeat(repeat=repeat, number=calls)) \
        / calls * 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    os.environ.setdefault("RETRACE_BACKEND", "cpp")
    from retracesoftware import functional as F
    from retracesoftware import stream, utils
    assert utils.BACKEND == "cpp" and stream.BACKEND == "cpp", "needs the C++ backend"

    ids = {threading.get_ident(): 0}
    current = F.compose(ids.__getitem__, threading.get_ident)
    d = tempfile.mkdtemp(prefix="retrace-bench-")
    w0 = stream.StreamWriter(os.path.join(d, "a.bin"), {}, flush_interval=60, buffer_size=1 << 26)
    w1 = stream.StreamWriter(os.path.join(d, "b.bin"), {}, thread_id=current, flush_interval=60,
                             buffer_size=1 << 26)
    # As a recording does: thread_id() asked once per thread (cache_thread_id).
    w2 = stream.StreamWriter(os.path.join(d, "c.bin"), {}, thread_id=current, flush_interval=60,
                             buffer_size=1 << 26, cache_thread_id=True)
    gate = utils.Gate()
    gate.phase = utils.INTERNAL
    fp = utils.fingerprint()
    noop = lambda *a: None  # noqa: E731
    rec_noop = utils.RecordCallGateway(gate, time.time, F.constantly(None), "CALL", "time.time", "RESULT", "ERROR")
    rec = utils.RecordCallGateway(gate, time.time, w2.write, "CALL", "time.time", "RESULT", "ERROR")
    rec_uncached = utils.RecordCallGateway(gate, time.time, w1.write, "CALL", "time.time", "RESULT", "ERROR")
    ns = dict(time=time, utils=utils, current=current, w0=w0, w1=w1, w2=w2, fp=fp, rec=rec,
              rec_uncached=rec_uncached, rec_noop=rec_noop, noop=noop)
    rows = []
    plain = t("time.time()", ns, a.calls, a.repeat)
    rows.append(("plain time.time()", plain, None))
    rows.append(("fingerprint()", t("utils.fingerprint()", ns, a.calls, a.repeat), None))
    rows.append(("fingerprint(1.5)", t("utils.fingerprint(1.5)", ns, a.calls, a.repeat), None))
    rows.append(("thread id lookup", t("current()", ns, a.calls, a.repeat), None))
    rows.append(("write, no thread_id", t("w0.write('CALL', 'time.time', fp, 'RESULT', 1.5)", ns, a.calls,
                                            a.repeat), None))
    rows.append(("write, thread_id", t("w1.write('CALL', 'time.time', fp, 'RESULT', 1.5)", ns, a.calls,
                                         a.repeat), None))
    rows.append(("write, cached tid", t("w2.write('CALL', 'time.time', fp, 'RESULT', 1.5)", ns, a.calls,
                                          a.repeat), None))
    g = t("rec_noop()", ns, a.calls, a.repeat)
    rows.append(("gateway, write=noop", g, g - plain))
    r = t("rec_uncached()", ns, a.calls, a.repeat)
    rows.append(("recorded, uncached tid", r, r - plain))
    r = t("rec()", ns, a.calls, a.repeat)
    rows.append(("recorded call", r, r - plain))
    # The writer exactly as a recording makes it (64 KiB buffers flushed
    # every 0.1 s, zstd on the flusher thread): the rows above use one huge
    # buffer, so they count page faults and no compression.
    w3 = stream.StreamWriter(os.path.join(d, "d.bin"), {}, thread_id=current, cache_thread_id=True)
    ns["rec_real"] = utils.RecordCallGateway(gate, time.time, w3.write, "CALL", "time.time", "RESULT", "ERROR")
    r = t("rec_real()", ns, a.calls, a.repeat)
    rows.append(("recorded, as recording", r, r - plain))
    plain_thread = t("time.time()", ns, a.calls, a.repeat, time.thread_time)
    r = t("rec_real()", ns, a.calls, a.repeat, time.thread_time)
    rows.append(("  caller's thread only", r, r - plain_thread))
    gate.phase = utils.DISABLED
    w3.close()
    w2.close()
    w1.close()
    w0.close()

    # Replay: a tape of recorded calls, read back by the native path.
    n = a.calls
    path = os.path.join(d, "r.bin")
    w = stream.StreamWriter(path, {}, thread_id=current, flush_interval=60)
    for i in range(n * a.repeat + 10):
        w.write("CALL", "time.time", fp, "RESULT", 1.5 + i)
    w.close()
    reader = stream.StreamReader(path)
    turn = utils.TurnState()
    rep = utils.ReplayCallGateway(gate, time.time, reader.take_call, current, turn, "CALL", "time.time",
                                  "RESULT", "ERROR", noop, noop)
    gate.phase = utils.INTERNAL
    ns["rep"] = rep
    p = t("rep()", ns, n, a.repeat)
    gate.phase = utils.DISABLED
    rows.append(("replayed call", p, p - plain))
    print(f"{'':<22} {'ns/call':>8} {'added':>8}")
    for name, v, added in rows:
        print(f"{name:<22} {v:>8.0f} {'' if added is None else f'{added:>8.0f}'}")


if __name__ == "__main__":
    main()
