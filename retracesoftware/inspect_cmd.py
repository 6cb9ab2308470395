"""``python -m retracesoftware inspect PATH [--json]``: what is in a recording.

Walks the recording with the stream reader (no replay, no program code) and
summarises: the program and where it ran, whether the recording is complete
(or where it ends early and why), events per kind and per thread, the busiest
boundary functions, bindings, sizes.
"""
from __future__ import annotations

import collections
import json
import os
import sys
import time

from retracesoftware.utils.errors import RecordingFormatError

TOP = 15


class _Placeholder:
    __slots__ = ()


def _children(path: str) -> list:
    """Every child process recorded under *path* (retracesoftware/children.py):
    pid, parent pid, how it was made, its program and how it ended."""
    from retracesoftware.children import processes
    out = []
    for proc in processes(path):
        entry = {"pid": proc["pid"], "parent_pid": proc["parent_pid"], "kind": proc["kind"],
                 "path": proc["path"], "depth": proc["depth"]}
        try:
            sub = summarise(proc["path"], with_children=False)
        except RecordingFormatError as exc:
            entry.update(complete=False, damage=str(exc), exit_code=None, events=None, argv=None)
        else:
            entry.update(complete=sub["complete"], damage=sub["damage"], exit_code=sub["exit_code"],
                         events=sub["events"], argv=sub["argv"])
        out.append(entry)
    return out


def _tests(path: str) -> list:
    """The tests of a pytest session recording (pytest --retrace-record): nodeid, outcome, xdist worker."""
    from retracesoftware.install.pytest_session import outcomes, tests_in
    return [{"nodeid": n, "outcome": o, "worker": w} for n, o, w in outcomes(tests_in(path))]


def summarise(path: str, *, with_children: bool = True) -> dict:
    from retracesoftware.install.recording_streams import open_recording

    reader = open_recording(path)
    pre = reader.preamble
    if not isinstance(pre, dict):
        raise RecordingFormatError(f"{path} has no retrace preamble — not a recording made by retracesoftware")
    calls = collections.Counter()
    tags = collections.Counter()
    per_thread = collections.Counter()
    threads_seen = []
    bindings = 0
    values = 0
    damage = None
    damage_reason = None
    exit_info = None
    expect_name = False
    last_values = collections.deque(maxlen=6)
    try:
        while True:
            kind = reader.next_kind
            if kind is None:
                break
            tid = reader.thread
            if tid not in per_thread:
                threads_seen.append(tid)
            per_thread[tid] += 1
            if kind == "binding":
                reader.bind(_Placeholder())
                bindings += 1
                continue
            value = reader.read()
            values += 1
            last_values.append(value)
            if expect_name:
                if isinstance(value, str):
                    calls[value] += 1
                expect_name = False
            elif isinstance(value, str) and value.isupper() and value.replace("_", "").isalpha():
                tags[value] += 1
                expect_name = value == "CALL"
    except RecordingFormatError as exc:
        damage = str(exc)
        damage_reason = getattr(exc, "reason", None)
    except EOFError:
        pass
    position = reader.position
    events = getattr(position, "event", values + bindings)
    frames = getattr(position, "frame", None)
    reader.close()
    tail = list(last_values)
    # The last call of a complete recording is retrace.exit -> (exit code, end time).
    if (len(tail) >= 5 and tail[-5] == "CALL" and tail[-4] == "retrace.exit" and tail[-2] == "RESULT"
            and isinstance(tail[-1], tuple) and len(tail[-1]) == 2):
        exit_info = {"exit_code": tail[-1][0], "ended_at": tail[-1][1]}
        calls["retrace.exit"] -= 1
        if not calls["retrace.exit"]:
            del calls["retrace.exit"]
    # Foreign calls made through ctypes that were not recorded (install/foreign.py).
    unrecorded_prefix = "ctypes.unrecorded:"
    unrecorded = sorted(n[len(unrecorded_prefix):] for n in calls if n.startswith(unrecorded_prefix))
    for name in unrecorded:
        del calls[unrecorded_prefix + name]
    started = pre.get("started_at")
    summary = {
        "path": os.path.abspath(path),
        "size_bytes": os.path.getsize(path),
        "frames": frames,
        "format_version": pre.get("preamble_version"),
        "retrace_version": pre.get("retrace_version"),
        "python_version": pre.get("python_version", "").split()[0] if pre.get("python_version") else None,
        "argv": pre.get("argv"),
        "target": pre.get("target"),
        "cwd": pre.get("cwd"),
        "pid": pre.get("pid"),
        "hash_seed": pre.get("hash_seed"),
        "started_at": started,
        "complete": damage is None and exit_info is not None,
        "damage": damage,
        "damage_reason": damage_reason,
        "exit_code": exit_info["exit_code"] if exit_info else None,
        "duration_s": (exit_info["ended_at"] - started) if exit_info and isinstance(started, (int, float)) else None,
        "events": events,
        "values": values,
        "bindings": bindings,
        "calls": sum(calls.values()),
        "tags": dict(tags),
        "threads": len([t for t in threads_seen if t is not None]) or 1,
        "events_per_thread": {str(t): n for t, n in per_thread.items()},
        "top_functions": calls.most_common(TOP),
        "unrecorded_foreign_calls": unrecorded,
        "children": _children(path) if with_children else [],
        "tests": _tests(path),
    }
    if events:
        summary["bytes_per_event"] = round(summary["size_bytes"] / events, 2)
    return summary


def _program(summary) -> str:
    target = summary.get("target") or {}
    kind, value, args = target.get("kind"), target.get("value"), target.get("args", [])
    if kind == "module":
        words = ["python", "-m", value, *args]
    elif kind == "code":
        words = ["python", "-c", value, *args]
    else:
        words = ["python", value or "?", *args]
    return " ".join(words)


def render(summary: dict) -> str:
    lines = []
    size = summary["size_bytes"]
    lines.append(f"recording:  {summary['path']} ({size:,} bytes, {summary['frames']} frames)")
    started = summary.get("started_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    lines.append(f"program:    {_program(summary)}")
    lines.append(f"            recorded {when} with Python {summary.get('python_version')}, "
                 f"pid {summary.get('pid')}, cwd {summary.get('cwd')}")
    if summary["damage"]:
        reason = summary.get("damage_reason") or summary["damage"]
        if reason.startswith("torn frame"):
            lines.append(f"status:     ends early at event {summary['events']} (torn frame: the program was "
                         f"killed while its recording was being written); the events before it replay")
        else:
            lines.append(f"status:     damaged at event {summary['events']} ({reason}); "
                         f"the events before it replay")
    elif not summary["complete"]:
        lines.append(f"status:     ends early at event {summary['events']} (the program did not exit "
                     f"normally while recording: killed, still running, or its recording could not "
                     f"be written)")
    else:
        duration = summary.get("duration_s")
        extra = f", ran {duration:.3f} s" if isinstance(duration, (int, float)) else ""
        code = summary["exit_code"]
        # A recording started by the .pth hook ends at the interpreter's
        # exit, where Python code cannot see the exit status (a SystemExit
        # is already handled): say so rather than "exit code None".
        shown = f"exit code {code}" if code is not None else "exit code not recorded (the interpreter ran the program)"
        lines.append(f"status:     complete, {shown}{extra}")
    tags = summary["tags"]
    lines.append(f"events:     {summary['events']:,} ({summary['calls']:,} boundary calls, "
                 f"{tags.get('CALLBACK', 0)} callbacks, {tags.get('ERROR', 0)} errors, "
                 f"{summary['bindings']} bindings; {summary.get('bytes_per_event', 0)} bytes/event)")
    per_thread = summary["events_per_thread"]
    lines.append(f"threads:    {summary['threads']}" + (
        "  (" + ", ".join(f"thread {t}: {n:,}" for t, n in per_thread.items()) + ")" if per_thread else ""))
    children = summary.get("children") or []
    lines.append(f"processes:  {1 + len(children)}" + (
        "  (replay one with --pid PID)" if children else ""))
    if children:
        lines.append(f"  pid {summary.get('pid')}: main process")
        for child in children:
            how = "forked by" if child["kind"] == "fork" else "subprocess of"
            if child["complete"]:
                end = f"exit code {child['exit_code']}"
            elif child.get("damage"):
                end = "damaged recording"
            else:
                end = "ends early (killed or still running)"
            program = " ".join(child["argv"] or []) if child["kind"] != "fork" else ""
            indent = "  " * (child["depth"] + 1)
            lines.append(f"{indent}pid {child['pid']}: {how} {child['parent_pid']}"
                         + (f", python {program}" if program else "")
                         + f", {child['events']} events, {end}")
    tests = summary.get("tests") or []
    if tests:
        failed = sum(1 for t in tests if t["outcome"] in ("failed", "error"))
        lines.append(f"tests:      {len(tests)} ({failed} failed; replay one with --test NODEID)")
        for test in tests:
            where = f"  [{test['worker']}]" if test.get("worker") else ""
            lines.append(f"  {test['nodeid']}  {test['outcome']}{where}")
    if summary.get("unrecorded_foreign_calls"):
        lines.append("unrecorded foreign calls (ctypes; run for real on replay, not checked): "
                     + ", ".join(summary["unrecorded_foreign_calls"]))
    if summary["top_functions"]:
        lines.append("top boundary functions:")
        width = len(f"{summary['top_functions'][0][1]:,}")
        for name, count in summary["top_functions"]:
            lines.append(f"  {count:>{width},}  {name}")
    return "\n".join(lines) + "\n"


def inspect_main(opts) -> int:
    path = opts.recording
    if not os.path.exists(path):
        raise RecordingFormatError(f"recording {path} does not exist — check the path")
    from retracesoftware.install.masking import mask, mask_data
    summary = mask_data(summarise(path))
    if opts.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(mask(render(summary)))
    return 0
