"""``python -m retracesoftware events PATH``: one line per event, in replay order.

    python -m retracesoftware events run.bin --thread 1 --grep recv
    python -m retracesoftware events run.bin --kind call --from 100 --to 200 --json

Python: `list_events(path, ...)` yields the matching `Event` objects
(retracesoftware/recording.py). Streams: memory stays flat on any length.
"""
from __future__ import annotations

import json
import sys
from typing import Iterable, Iterator

from retracesoftware.recording import KINDS, Event, open_recording
from retracesoftware.views._common import Masker, Parser, int_arg, run_quietly_on_closed_pipe

HEADER = f"{'index':>8}  {'pid/thread':<10} {'kind':<15} function(arguments) -> result"


def list_events(path, *, pid: int | None = None, thread=None, grep: str | None = None,
                start: int | None = None, stop: int | None = None,
                kinds: Iterable[str] | None = None) -> Iterator[Event]:
    """The events of recording *path* (process *pid*) that match every filter
    given: logical *thread*, *kinds*, event index in [start, stop], *grep*
    (a substring of the event's line, case-insensitive)."""
    kinds = frozenset(kinds) if kinds else None
    if kinds:
        unknown = sorted(kinds - set(KINDS))
        if unknown:
            raise ValueError(f"unknown event kind {unknown[0]!r} (kinds: {', '.join(KINDS)})")
    rec = open_recording(path, pid=pid)       # errors now, not at the first event
    return _matching(rec, thread, grep.lower() if grep else None, start, stop, kinds)


def _matching(rec, thread, needle, start, stop, kinds):
    for ev in rec.events(start=start, stop=None if stop is None else stop + 1):
        if thread is not None and ev.thread != thread and not (thread == 0 and ev.thread is None):
            continue
        if kinds is not None and ev.kind not in kinds:
            continue
        if needle is not None and needle not in ev.line(width=10**6).lower():
            continue
        yield ev


def build_parser():
    p = Parser("events", description="List the events of a recording, one line each, in replay order.",
               epilog="Index is the event number divergence reports and `fork --at` use. "
                      "Lines: index, pid/thread, kind, function(argument summary) -> result "
                      "(!! for an exception). Arguments show as (…) when the function has no "
                      "summariser (configs [summaries]).")
    p.add_argument("recording", metavar="PATH", help="the recording")
    p.add_argument("--pid", type=int_arg("--pid"), help="list the child process PID of the run (see inspect)")
    p.add_argument("--thread", type=int_arg("--thread"), help="only logical thread N (0 is the main thread)")
    p.add_argument("--grep", metavar="TEXT", help="only events whose line contains TEXT (case-insensitive)")
    p.add_argument("--from", dest="start", type=int_arg("--from"), metavar="N", help="from event index N")
    p.add_argument("--to", dest="stop", type=int_arg("--to"), metavar="M", help="up to event index M (inclusive)")
    p.add_argument("--kind", action="append", metavar="KIND",
                   help=f"only this kind (repeatable, or comma-separated): {', '.join(KINDS)}")
    p.add_argument("--json", action="store_true", help="JSON Lines: one object per event")
    p.add_argument("--width", type=int_arg("--width"), default=80, help="truncate results to N characters (80)")
    p.add_argument("--debug", action="store_true", help=argparse_suppress())
    return p


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def main(argv) -> int:
    opts = build_parser().parse_args(argv)
    kinds = [k for arg in opts.kind or () for k in arg.split(",") if k]
    from retracesoftware.runner import UsageError
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise UsageError(f"unknown event kind {bad[0]!r} (kinds: {', '.join(KINDS)})")
    events = list_events(opts.recording, pid=opts.pid, thread=opts.thread, grep=opts.grep,
                         start=opts.start, stop=opts.stop, kinds=kinds)
    mask = Masker()
    out = sys.stdout

    def emit():
        write = out.write
        if opts.json:
            dumps = json.dumps
            for ev in events:
                write(dumps(mask.data(ev.to_dict()), ensure_ascii=True, default=repr) + "\n")
        else:
            write(HEADER + "\n")
            for ev in events:
                write(mask(ev.line(opts.width)) + "\n")
        out.flush()
        return 0

    return run_quietly_on_closed_pipe(emit)
