"""``python -m retracesoftware trace PATH -o trace.json[.gz]``: a timeline for
Perfetto (ui.perfetto.dev) and chrome://tracing.

Chrome trace-event JSON (the "JSON Object Format": ``{"traceEvents": [...]}``):

* ``M`` events name the process (the recorded program, its recorded pid) and
  its threads (logical thread ids: 0 is the main thread, 1, 2… the threads
  it started, "1.1" a thread started by thread 1);
* ``X`` (complete) events are function spans of the project's own code,
  per thread, from an instrumented replay (views/instrument.py), nested;
* ``i`` (instant, thread-scoped) events are the boundary calls, sync points
  (lock acquires) and callbacks, named by their function, with the event
  index, argument summary and result in ``args``.

Times are the instrumented replay's (microseconds from its start): a
replayed boundary call is answered from the recording, so a sleep or a slow
socket takes no time here; the order, nesting and the program's own CPU
time are what the timeline shows. Filters follow VizTracer's:
``--include``/``--exclude`` (file or module globs), ``--max-depth``.
"""
from __future__ import annotations

import json
import os

from retracesoftware.views import _output as _common
from retracesoftware.views import _tape
from retracesoftware.views.instrumented_run import run_instrumented

PID_FALLBACK = 1


class _ThreadIds:
    """Logical thread ids -> small ints for the trace (``tid``)."""

    def __init__(self):
        self.ids = {}

    def __call__(self, logical):
        key = "?" if logical is None else str(logical)
        tid = self.ids.get(key)
        if tid is None:
            tid = self.ids[key] = len(self.ids) + 1
        return tid


def _label(logical) -> str:
    if logical in (0, "0"):
        return "main thread (0)"
    if logical is None or logical == "?":
        return "thread ?"
    return f"thread {logical}"


def write_trace(path, out, *, include=(), exclude=(), max_depth=None, boundary=True, progress=None,
                force=False) -> dict:
    """Write the trace of recording *path* to *out* (``.gz``: compressed).

    Returns counts: ``spans``, ``boundary`` events, ``threads``, ``faithful``,
    ``replay_s`` (time the instrumented replay took)."""
    _common.check_recording(path)
    pre = _tape.preamble(path)
    run = run_instrumented(path, include=include, exclude=exclude, max_depth=max_depth, spans=True,
                           progress=progress, replay_args=["--force"] if force else ())
    try:
        return _write(path, out, pre, run, boundary)
    finally:
        run.close()


def _write(path, out, pre, run, boundary) -> dict:
    pid = pre.get("pid") if isinstance(pre.get("pid"), int) else PID_FALLBACK
    t0 = run.meta.get("started_ns") or 0
    first_read = next(iter(run.reads()), None)
    if first_read is not None:
        t0 = min(t0, first_read[1])      # start-up events come before the tracer starts
    tids = _ThreadIds()
    codes = run.codes
    counts = {"spans": 0, "boundary": 0}

    def us(ns):
        return round((ns - t0) / 1000.0, 3)

    with _common.open_output(out) as fh:
        fh.write('{"displayTimeUnit":"ms","otherData":')
        fh.write(json.dumps({
            "recording": os.path.abspath(path),
            "program": " ".join(map(str, pre.get("argv") or [])),
            "python": (pre.get("python_version") or "").split()[0],
            "tracer": run.meta.get("tracer"),
            "faithful": run.faithful,
            "problem": run.problem,
            "clock": "instrumented replay (boundary calls are answered from the recording and take no time)",
        }))
        fh.write(',"traceEvents":[\n')
        first = [True]

        def emit(event):
            if not first[0]:
                fh.write(",\n")
            first[0] = False
            fh.write(json.dumps(event, separators=(",", ":"), default=str))

        program = os.path.basename(str((pre.get("argv") or ["python"])[0]))
        emit({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
              "args": {"name": f"{program} (pid {pid}, recorded)"}})
        slot_tid = [tids(logical) for logical in run.threads]
        for tslot, tcode, depth, start, end in run.spans():
            filename, qualname, module, line = codes[tcode]
            emit({"ph": "X", "name": qualname, "cat": module or "python", "pid": pid, "tid": slot_tid[tslot],
                  "ts": us(start), "dur": max(0.0, round((end - start) / 1000.0, 3)),
                  "args": {"file": filename, "line": line, "depth": depth}})
            counts["spans"] += 1
        if boundary:
            for event in _tape.walk(path, reads=run.reads()):
                if event.time_ns is None:
                    continue      # past where the instrumented replay stopped
                if event.kind == "value":
                    continue
                args = {"event": event.index, "kind": event.kind}
                if event.args:
                    args["args"] = event.args
                if event.result is not None:
                    args["result"] = _tape.short(event.result)
                if event.error is not None:
                    args["error"] = _tape.short(event.error)
                name = event.name or event.kind
                if event.kind == "sync":
                    name = "lock acquire" if isinstance(event.result, int) and not isinstance(event.result, bool) \
                        else "sync point"
                emit({"ph": "i", "s": "t", "name": name, "cat": f"boundary.{event.kind}", "pid": pid,
                      "tid": tids(event.thread), "ts": us(event.time_ns), "args": args})
                counts["boundary"] += 1
        for key, tid in tids.ids.items():
            emit({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": _label(key)}})
            emit({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
        fh.write("\n]}\n")
    counts.update(threads=len(tids.ids), faithful=run.faithful, problem=run.problem, replay_s=run.elapsed_s)
    return counts


HELP = __doc__


def main(argv) -> int:
    p = _common.parser("trace", "Write a Chrome trace-event JSON timeline (Perfetto, chrome://tracing) "
                                "of a recording, computed by an instrumented replay.")
    p.add_argument("recording")
    p.add_argument("-o", "--output", default="trace.json", help="output file (.json or .json.gz; - for stdout)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="trace only code whose file or module matches (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="never trace code whose file or module matches (repeatable)")
    p.add_argument("--max-depth", type=int, default=None, metavar="N",
                   help="spans deeper than N project frames are left out")
    p.add_argument("--no-boundary", action="store_true", help="leave out the boundary calls")
    p.add_argument("--force", action="store_true",
                   help="replay even if the Python version, sources or configs differ from the recording's")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    progress = _common.Progress("replaying", quiet=args.quiet)
    stats = write_trace(args.recording, args.output, include=args.include, exclude=args.exclude,
                        max_depth=args.max_depth, boundary=not args.no_boundary, progress=progress, force=args.force)
    progress.done()
    if not args.quiet:
        _common.say(f"trace: {stats['spans']:,} function spans, {stats['boundary']:,} boundary events, "
                    f"{stats['threads']} threads -> {args.output}"
                    + ("" if stats["faithful"] else f" (replay stopped early: {stats['problem']})"))
    return 0 if stats["faithful"] else 3
