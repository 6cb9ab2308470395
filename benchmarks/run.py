"""The speed of record and replay, side by side, in one command.

    python benchmarks/run.py                 # full run, both backends, table
    python benchmarks/run.py --quick         # small N, one repetition (CI)
    python benchmarks/run.py --json          # the same results as JSON
    python benchmarks/run.py --markdown      # the table as Markdown, with the machine

For each workload in benchmarks/workloads/ and each backend
(RETRACE_BACKEND=cpp, =python), the runner alternates plain -> record ->
replay runs, each a fresh subprocess, so machine noise hits all three modes
alike; it reports the median wall-clock seconds of each mode (process start to
exit, as a user sees it), the ratios to plain, the recording's size and event
count, and whether every replay's stdout is byte-identical to the stdout of the
record run it replays.

Exit status: non-zero if the runner itself crashes; in --quick mode also if a
workload listed in EXPECTED_TO_WORK fails to run, record or replay, or replays
unfaithfully. Timings are never asserted. Other failures are reported in the
table (status FAIL, faithful "no") and listed below it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS_DIR = os.path.join(HERE, "workloads")
BACKENDS = ("cpp", "python")


@dataclass(frozen=True)
class Workload:
    name: str
    file: str
    n: int                  # size argument (argv[1]) in a full run
    quick_n: int            # size argument in --quick mode
    calls_per_n: int = 0    # recorded boundary calls per unit of n (for ns/call), 0 = not reported
    what: str = ""


WORKLOADS = (
    Workload("startup", "startup.py", 1, 1, 0,
             "start, one clock read, exit (the fixed cost of retrace)"),
    Workload("cpu", "cpu.py", 5_000_000, 50_000, 0,
             "CPU-bound pure Python, a few clock calls"),
    Workload("clock", "clock.py", 1_000_000, 20_000, 1,
             "N time.time() calls"),
    Workload("mixed", "mixed.py", 200_000, 5_000, 1,
             "N calls rotating time/perf_counter/random/randint/urandom/uuid4"),
    Workload("files", "files.py", 5_000, 100, 0,
             "N small files written, listed, stat'ed, read back in a temp dir"),
    Workload("sqlite", "sqlite.py", 200_000, 2_000, 0,
             "sqlite3 file db: N random rows, index, aggregates, 143 lookups"),
    Workload("http", "http_loopback.py", 1_000, 20, 0,
             "http.server in a thread + N urllib GETs on loopback"),
    Workload("socket_echo", "socket_echo.py", 10_000, 200, 0,
             "loopback TCP echo server thread, N 32-byte round trips"),
    Workload("subprocess", "subprocesses.py", 5, 2, 0,
             "N subprocess.run([sys.executable, '-c', ...])"),
    Workload("threads_lock", "threads_lock.py", 300_000, 5_000, 0,
             "4 threads x N lock-protected increments, appends under a 2nd lock"),
)

# Workloads that must record and replay faithfully on both backends: a failure
# of one of these makes `--quick` exit non-zero (CI catches the regression).
# These are the basic boundary kinds every recording relies on: the clock,
# randomness (random, os.urandom, uuid) and files. Add a workload here once
# it works on both backends; never remove one to make CI green.
EXPECTED_TO_WORK = frozenset({"startup", "cpu", "clock", "mixed", "files"})


@dataclass
class RunResult:
    seconds: float
    returncode: int | None          # None: killed by the timeout
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error_line(self) -> str:
        if self.returncode is None:
            return "timed out"
        lines = [l for l in self.stderr.decode(errors="replace").splitlines() if l.strip()]
        # The first "retrace: error:" line says what went wrong; else the last
        # line (a Python traceback's exception line).
        for line in lines:
            if line.startswith("retrace: error:"):
                return line.strip()
        return lines[-1].strip() if lines else f"exit code {self.returncode}, no stderr"


@dataclass
class Cell:
    """One workload on one backend: every repetition of the three modes."""
    workload: Workload
    backend: str
    n: int
    plain: list[RunResult] = field(default_factory=list)
    record: list[RunResult] = field(default_factory=list)
    replay: list[RunResult] = field(default_factory=list)
    faithful_reps: list[bool] = field(default_factory=list)
    recording_bytes: list[int] = field(default_factory=list)
    events: int | None = None
    events_source: str = ""
    failure: str | None = None       # first failure, "<mode>: <error line>"

    def median(self, mode: str) -> float | None:
        runs = [r.seconds for r in getattr(self, mode) if r.ok]
        return statistics.median(runs) if runs else None

    @property
    def faithful(self) -> bool:
        return bool(self.faithful_reps) and all(self.faithful_reps) and self.failure is None

    @property
    def varies(self) -> bool | None:
        """Did a plain run print something other than a record run? (the
        workload really is nondeterministic, so fidelity is a real check)."""
        outs = [r.stdout for r in self.plain + self.record if r.ok]
        return len(set(outs)) > 1 if len(outs) > 1 else None


def run_process(argv, env, cwd, timeout) -> RunResult:
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return RunResult(time.perf_counter() - started, None, e.stdout or b"", e.stderr or b"")
    return RunResult(time.perf_counter() - started, done.returncode, done.stdout, done.stderr)


def first_difference(recorded: bytes, replayed: bytes, width: int = 80) -> str:
    """Where two outputs part: 'line L: recorded ... / replayed ...'."""
    a, b = recorded.splitlines(), replayed.splitlines()
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else b"<no line>"
        y = b[i] if i < len(b) else b"<no line>"
        if x != y:
            return (f"line {i + 1}: recorded {x[:width].decode(errors='replace')!r}"
                    f" / replayed {y[:width].decode(errors='replace')!r}")
    return "same lines, different line endings"


def tree_bytes(root: str) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            total += os.path.getsize(os.path.join(folder, name))
    return total


MAGIC = b"\x89RTRC\r\n\x1a"

# Counts every event after the preamble (THREAD_SWITCH, NEW_BINDING and
# BINDING_DELETE included, as docs/FORMAT.md numbers them) with the stream
# layer's own reader, run in the benchmarked interpreter. The reader handles
# switches and deletes itself and counts them in `events`.
COUNT_WITH_STREAM_READER = r"""
import json, sys
from retracesoftware.stream import StreamReader
total = 0
for path in sys.argv[1:]:
    with StreamReader(path) as reader:
        while True:
            kind = reader.next_kind
            if kind is None:
                break
            if kind == "binding":
                reader.bind(object())
            else:
                reader.read()
        total += reader.events
print(json.dumps(total))
"""


def recordings_in(folder: str) -> list[str]:
    paths = []
    for dirpath, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                if f.read(len(MAGIC)) == MAGIC:
                    paths.append(path)
    return sorted(paths)


def count_events(python: str, folder: str, main_recording: str, env) -> tuple[int | None, str]:
    """(events, how they were counted) for every recording file in folder."""
    # `inspect --json` is the product's own view; use it when it exists and
    # says how many events there are.
    done = subprocess.run([python, "-m", "retracesoftware", "inspect", main_recording, "--json"],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode == 0:
        try:
            report = json.loads(done.stdout)
        except ValueError:
            report = None
        if isinstance(report, dict) and isinstance(report.get("events"), int):
            return report["events"], "inspect"
    paths = recordings_in(folder)
    if not paths:
        return None, "no recording"
    done = subprocess.run([python, "-c", COUNT_WITH_STREAM_READER, *paths],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode == 0:
        return json.loads(done.stdout), "StreamReader"
    err = [l for l in done.stderr.decode(errors="replace").splitlines() if l.strip()]
    return None, "StreamReader failed: " + (err[-1] if err else f"exit {done.returncode}")


def bench_cell(wl: Workload, backend: str, n: int, repeat: int, python: str,
               scratch: str, timeout: float, progress) -> Cell:
    cell = Cell(wl, backend, n)
    env = dict(os.environ, RETRACE_BACKEND=backend)
    env.pop("RETRACE", None)  # the .pth hook must not record the plain runs
    script = os.path.join(WORKLOADS_DIR, wl.file)
    cwd = os.path.join(scratch, "cwd")
    os.makedirs(cwd, exist_ok=True)
    last_folder = None
    for rep in range(repeat):
        folder = os.path.join(scratch, f"{wl.name}-{backend}-{rep}")
        os.makedirs(folder)
        recording = os.path.join(folder, "run.bin")

        plain = run_process([python, script, str(n)], env, cwd, timeout)
        cell.plain.append(plain)
        if not plain.ok:
            cell.failure = cell.failure or f"plain: {plain.error_line()}"
            break
        record = run_process([python, "-m", "retracesoftware", "--recording", recording,
                              "--", python, script, str(n)], env, cwd, timeout)
        cell.record.append(record)
        cell.recording_bytes.append(tree_bytes(folder))
        if not record.ok:
            cell.failure = cell.failure or f"record: {record.error_line()}"
            break
        replay = run_process([python, "-m", "retracesoftware", "--recording", recording],
                             env, cwd, timeout)
        cell.replay.append(replay)
        if not replay.ok:
            cell.faithful_reps.append(False)
            cell.failure = cell.failure or f"replay: {replay.error_line()}"
            break
        same = replay.stdout == record.stdout
        cell.faithful_reps.append(same)
        if not same:
            cell.failure = cell.failure or ("replay: stdout differs from the record run's: "
                                            + first_difference(record.stdout, replay.stdout))
            break
        progress(".")
        if last_folder is not None:
            shutil.rmtree(last_folder, ignore_errors=True)
        last_folder = folder
    if cell.record and cell.record[-1].ok:
        folder = os.path.join(scratch, f"{wl.name}-{backend}-{len(cell.record) - 1}")
        cell.events, cell.events_source = count_events(
            python, folder, os.path.join(folder, "run.bin"), env)
    return cell


def cell_row(cell: Cell, startup: dict[str, Cell]) -> dict:
    plain, record, replay = cell.median("plain"), cell.median("record"), cell.median("replay")
    size = statistics.median(cell.recording_bytes) if cell.recording_bytes else None
    row = {
        "workload": cell.workload.name,
        "backend": cell.backend,
        "n": cell.n,
        "repeat": len(cell.plain),
        "status": "ok" if cell.failure is None else "FAIL",
        "faithful": cell.faithful,
        "varies": cell.varies,
        "plain_s": plain,
        "record_s": record,
        "replay_s": replay,
        "record_ratio": record / plain if plain and record else None,
        "replay_ratio": replay / plain if plain and replay else None,
        "plain_spread": spread(cell.plain),
        "seconds": {m: [round(r.seconds, 4) for r in getattr(cell, m)]
                    for m in ("plain", "record", "replay")},
        "recording_bytes": int(size) if size is not None else None,
        "events": cell.events,
        "events_counted_by": cell.events_source or None,
        "bytes_per_event": size / cell.events if size and cell.events else None,
        "ns_per_call": None,
        "ns_per_call_net": None,
        "failure": cell.failure,
        "expected_to_work": cell.workload.name in EXPECTED_TO_WORK,
    }
    calls = cell.workload.calls_per_n * cell.n
    if calls and plain and record:
        row["ns_per_call"] = (record - plain) / calls * 1e9
        base = startup.get(cell.backend)
        if base is not None and base.median("plain") and base.median("record"):
            fixed = base.median("record") - base.median("plain")
            row["ns_per_call_net"] = (record - plain - fixed) / calls * 1e9
    return row


def spread(runs: list[RunResult]) -> float | None:
    """(slowest - fastest) / median of the successful runs: the noise level."""
    times = [r.seconds for r in runs if r.ok]
    if len(times) < 2:
        return None
    return (max(times) - min(times)) / statistics.median(times)


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


COLUMNS = ("workload", "backend", "plain s", "noise", "record s", "replay s", "rec/plain", "rep/plain",
           "bytes", "events", "B/event", "ns/call", "faithful", "varies", "status")


def table_cells(row: dict) -> list[str]:
    ns = row["ns_per_call"]
    ns_text = "-"
    if ns is not None:
        ns_text = f"{ns:.0f}"
        if row["ns_per_call_net"] is not None:
            ns_text += f" ({row['ns_per_call_net']:.0f} net)"
    return [
        row["workload"], row["backend"],
        fmt(row["plain_s"], ".3f"),
        "-" if row["plain_spread"] is None else f"{row['plain_spread'] * 100:.0f}%",
        fmt(row["record_s"], ".3f"), fmt(row["replay_s"], ".3f"),
        fmt(row["record_ratio"], ".2f"), fmt(row["replay_ratio"], ".2f"),
        fmt(row["recording_bytes"], ","), fmt(row["events"], ","),
        fmt(row["bytes_per_event"], ".1f"), ns_text,
        "yes" if row["faithful"] else "no",
        {True: "yes", False: "no", None: "-"}[row["varies"]],
        row["status"],
    ]


def render_text(rows: list[dict]) -> str:
    body = [list(COLUMNS)] + [table_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    out = []
    for k, line in enumerate(body):
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_markdown(rows: list[dict]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |",
           "|" + "|".join("---" if i < 2 else "--:" for i in range(len(COLUMNS))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(table_cells(r)) + " |")
    return "\n".join(out)


def machine(python: str) -> dict:
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "uname": " ".join(platform.uname()),
        "cpus": os.cpu_count(),
        "python": version,
        "python_executable": python,
    }


def failures_text(rows: list[dict]) -> list[str]:
    return [f"  {r['workload']} [{r['backend']}]{' (expected to work)' if r['expected_to_work'] else ''}: "
            f"{r['failure']}" for r in rows if r["failure"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small N, one repetition: seconds, not minutes (CI)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown with the machine line (for README.md)")
    parser.add_argument("--json-out", metavar="PATH", help="also write the JSON results to PATH")
    parser.add_argument("--repeat", type=int, help="repetitions of plain/record/replay (default 5; 1 with --quick)")
    parser.add_argument("--backend", choices=BACKENDS + ("both",), default="both")
    parser.add_argument("--only", help="comma-separated workload names")
    parser.add_argument("--timeout", type=float, help="seconds per run before it counts as a hang "
                        "(default 300; 60 with --quick)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with retracesoftware installed (default: this one)")
    args = parser.parse_args(argv)

    repeat = args.repeat or (1 if args.quick else 5)
    timeout = args.timeout or (60.0 if args.quick else 300.0)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    workloads = list(WORKLOADS)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        known = {w.name for w in WORKLOADS}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        workloads = [w for w in WORKLOADS if w.name in wanted]
        if "startup" not in wanted:  # needed for the net ns/call figure
            workloads.insert(0, WORKLOADS[0])

    def progress(text: str) -> None:  # stderr: stdout stays clean for --json / --markdown
        sys.stderr.write(text)
        sys.stderr.flush()

    scratch = tempfile.mkdtemp(prefix="retrace-bench-")
    cells: list[Cell] = []
    started = time.perf_counter()
    try:
        for wl in workloads:
            for backend in backends:
                progress(f"{wl.name} [{backend}] ")
                cell = bench_cell(wl, backend, wl.quick_n if args.quick else wl.n, repeat,
                                  args.python, scratch, timeout, progress)
                progress(" ok\n" if cell.failure is None else f" FAIL: {cell.failure}\n")
                cells.append(cell)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.perf_counter() - started

    startup = {c.backend: c for c in cells if c.workload.name == "startup"}
    rows = [cell_row(c, startup) for c in cells]
    info = machine(args.python)
    info.update(mode="quick" if args.quick else "full", repeat=repeat, elapsed_s=round(elapsed, 1))

    report = {"machine": info, "results": rows}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.markdown:
        print(f"{info['date']} · `{info['uname']}` · {info['cpus']} CPUs · Python {info['python']} · "
              f"{info['mode']} run, median of {repeat} · {info['elapsed_s']} s in all\n")
        print(render_markdown(rows))
        fails = failures_text(rows)
        if fails:
            print("\nFailures:\n")
            print("\n".join("-" + f[1:] for f in fails))
    else:
        print(f"# {info['date']}  {info['uname']}  cpus={info['cpus']}  Python {info['python']}  "
              f"{info['mode']} run, median of {repeat}, {info['elapsed_s']} s")
        print(render_text(rows))
        fails = failures_text(rows)
        if fails:
            print("failures:")
            print("\n".join(fails))

    if args.quick:
        broken = [r for r in rows if r["expected_to_work"] and (r["failure"] or not r["faithful"])]
        if broken:
            sys.stderr.write("benchmarks: expected-to-work workload(s) failed: "
                             + ", ".join(f"{r['workload']} [{r['backend']}]" for r in broken) + "\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
