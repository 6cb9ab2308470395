"""``python -m retracesoftware diff A B``: what differs between two recordings
of the same program (a passing and a failing run).

The events of each recording are aligned per logical thread, call by call.
Two calls *ask the same question* when they are the same function with the
same argument fingerprint; their *inputs differ* when the recorded results
(or errors) differ. The report names the first input that differs, where
the runs first asked different questions (took another path), the input
most likely to have caused it (the last one that differed, on that thread,
before the paths split), then a summary. Exit 0: equivalent; 1: they differ.

Python: ``compare(a, b) -> dict`` (what ``--json`` prints).
"""
from __future__ import annotations

import collections
import json
import sys

from retracesoftware.recording import open_recording
from retracesoftware.views._common import Masker, Parser, run_quietly_on_closed_pipe

#: inputs that differ on every run (clocks, process and thread identities):
#: reported, but never "the first input that differs" nor a cause
VOLATILE_PREFIXES = ("time.", "retrace.thread.", "retrace.exit", "posix.getpid", "posix.getppid",
                     "posix.times", "resource.", "posix.getloadavg")
#: stat results compare without their times (atime changes by reading)
_STAT_FIELDS = 7


def volatile(function) -> bool:
    return isinstance(function, str) and function.startswith(VOLATILE_PREFIXES)


class _Call:
    __slots__ = ("index", "thread", "function", "args", "fingerprint", "outcome", "stack", "kind")

    def __init__(self, ev):
        self.index = ev.index
        self.thread = ev.thread if ev.thread is not None else 0
        self.kind = ev.kind
        self.function = ev.function
        self.args = ev.args
        self.fingerprint = ev.fingerprint
        self.stack = ev.stack
        self.outcome = _outcome(ev)

    def question(self):
        if self.function == _OUTPUT:      # what the program wrote: a different write is another path
            return (self.kind, self.function, self.fingerprint, self.outcome)
        return (self.kind, self.function, self.fingerprint)

    def text(self):
        name = self.function if self.function is not None else "?"
        if name == _OUTPUT:
            return f"output {self.outcome}"
        if self.kind == "callback":
            return f"callback {name}({self.args or ''})"
        return f"{name}({self.args})" if self.args is not None else f"{name}(…)"


_OUTPUT = "retrace.output"      # install/output.py: result = <qqI> summary + the first bytes
_OUTPUT_HEAD = 20


def _outcome(ev):
    if ev.outcome is None and ev.kind == "call":
        return None
    if ev.function == _OUTPUT and isinstance(ev.result, bytes):
        return _value_text(ev.result[_OUTPUT_HEAD:])
    if ev.outcome == "error" or ev.kind == "error":
        return "raise " + _value_text(ev.error)
    return _value_text(ev.result)


def _value_text(value):
    from retracesoftware.recording import summarise_value
    if isinstance(value, tuple) and type(value).__name__ == "stat_result":
        value = tuple(value)[:_STAT_FIELDS]
    return summarise_value(value, limit=200)


def _load(path):
    """Per-thread call lists (calls and callbacks), exit code, pid."""
    rec = open_recording(path)
    threads = collections.defaultdict(list)
    by_index = {}
    exit_code = None
    for ev in rec.events():
        if ev.kind in ("call", "callback"):
            if ev.function == "retrace.exit" and isinstance(ev.result, tuple) and ev.result:
                exit_code = ev.result[0]
                continue
            call = _Call(ev)
            threads[call.thread].append(call)
            if call.outcome is None:
                by_index[ev.index] = call
        elif ev.kind in ("result", "error") and ev.call_index in by_index:
            call = by_index.pop(ev.call_index)
            call.outcome = _outcome(ev)
            if ev.function == "retrace.exit" and isinstance(ev.result, tuple) and ev.result:
                exit_code = ev.result[0]
                threads[call.thread].remove(call)
    return rec, dict(threads), exit_code


def _where(call):
    if not call.stack:
        return None
    return [f"{f}:{line} in {fn}" for f, line, fn in call.stack[-6:]]


def compare(a, b) -> dict:
    """Compare recordings *a* and *b* (paths): the report as a dict."""
    rec_a, threads_a, exit_a = _load(a)
    rec_b, threads_b, exit_b = _load(b)
    first_input = None       # (a_call, b_call) with the smallest A index
    first_split = None
    cause = None
    differing = collections.Counter()
    volatile_diffs = collections.Counter()
    other_paths = []
    only_a = collections.Counter()
    only_b = collections.Counter()
    for tid in sorted(set(threads_a) | set(threads_b), key=repr):
        ca, cb = threads_a.get(tid, []), threads_b.get(tid, [])
        last_diff = None
        split = None
        for x, y in zip(ca, cb):
            if x.question() != y.question():
                split = (x, y)
                break
            if x.outcome != y.outcome:
                if volatile(x.function):
                    volatile_diffs[x.function] += 1
                    continue
                differing[x.function] += 1
                last_diff = (x, y)
                if first_input is None or x.index < first_input[0].index:
                    first_input = (x, y)
        n = min(len(ca), len(cb))
        if split is None and len(ca) != len(cb):
            split = (ca[n] if len(ca) > n else None, cb[n] if len(cb) > n else None)
        if split is not None:
            other_paths.append(tid)
            at = ca.index(split[0]) if split[0] is not None else n
            for call in ca[at:]:
                only_a[call.function] += 1
            at = cb.index(split[1]) if split[1] is not None else n
            for call in cb[at:]:
                only_b[call.function] += 1
            key = split[0].index if split[0] is not None else split[1].index
            if first_split is None or key < first_split[2]:
                first_split = (split[0], split[1], key)
                cause = last_diff
    if cause is None and exit_a != exit_b:
        # The runs asked the same questions and ended differently: the last
        # differing input of all is the likeliest cause.
        cause = _last_input(threads_a, threads_b)

    def call_dict(call):
        if call is None:
            return None
        return {"index": call.index, "thread": call.thread, "function": call.function, "args": call.args,
                "call": call.text(), "outcome": call.outcome, "stack": _where(call)}

    def pair(p):
        return None if p is None else {"a": call_dict(p[0]), "b": call_dict(p[1])}

    same = first_input is None and first_split is None and exit_a == exit_b
    return {
        "a": rec_a.path, "b": rec_b.path, "equivalent": same,
        "first_differing_input": pair(first_input),
        "first_other_path": pair(first_split[:2]) if first_split else None,
        "likely_cause": pair(cause),
        "exit_codes": {"a": exit_a, "b": exit_b},
        "differing_inputs_by_function": dict(differing.most_common()),
        "volatile_differences_by_function": dict(volatile_diffs.most_common()),
        "threads_on_other_paths": other_paths,
        "calls_only_in_a_by_function": dict(only_a.most_common(10)),
        "calls_only_in_b_by_function": dict(only_b.most_common(10)),
    }


def _last_input(threads_a, threads_b):
    best = None
    for tid, ca in threads_a.items():
        for x, y in zip(ca, threads_b.get(tid, [])):
            if x.question() == y.question() and x.outcome != y.outcome and not volatile(x.function):
                if best is None or x.index > best[0].index:
                    best = (x, y)
    return best


def render(report: dict) -> str:
    out = []
    if report["equivalent"]:
        vol = report["volatile_differences_by_function"]
        extra = f" (clock/identity reads differ: {_counts(vol)})" if vol else ""
        return f"equivalent: the same calls with the same results, the same exit code{extra}\n"
    fi = report["first_differing_input"]
    if fi:
        a, b = fi["a"], fi["b"]
        out.append(f"first differing input: {a['call']} (thread {a['thread']}; A event {a['index']}, "
                   f"B event {b['index']})")
        out.append(f"  A: {a['outcome']}")
        out.append(f"  B: {b['outcome']}")
        for label, side in (("A", a), ("B", b)):
            if side["stack"]:
                out.append(f"  {label} recorded at:")
                out.extend(f"    {frame}" for frame in side["stack"])
    else:
        out.append("first differing input: none (every call asked the same got the same answer)")
    sp = report["first_other_path"]
    if sp:
        a, b = sp["a"], sp["b"]
        where = f"A event {a['index'] if a else 'end'}, B event {b['index'] if b else 'end'}"
        out.append(f"took other paths at: {where}: A {'called ' + a['call'] if a else 'ended'}, "
                   f"B {'called ' + b['call'] if b else 'ended'}")
    cause = report["likely_cause"]
    if cause:
        a, b = cause["a"], cause["b"]
        out.append(f"likely cause: {a['call']} returned {a['outcome']} in A, {b['outcome']} in B "
                   f"(A event {a['index']}, B event {b['index']}: the last input that differed before "
                   f"the runs parted)")
    codes = report["exit_codes"]
    out.append("summary:")
    out.append(f"  exit codes: A {codes['a']}, B {codes['b']}")
    if report["differing_inputs_by_function"]:
        out.append(f"  differing inputs: {_counts(report['differing_inputs_by_function'])}")
    if report["volatile_differences_by_function"]:
        out.append(f"  clock/identity reads that differ (expected): "
                   f"{_counts(report['volatile_differences_by_function'])}")
    if report["threads_on_other_paths"]:
        out.append(f"  threads that took other paths: {', '.join(map(str, report['threads_on_other_paths']))}")
        if report["calls_only_in_a_by_function"]:
            out.append(f"  calls after the split, A: {_counts(report['calls_only_in_a_by_function'])}")
        if report["calls_only_in_b_by_function"]:
            out.append(f"  calls after the split, B: {_counts(report['calls_only_in_b_by_function'])}")
    return "\n".join(out) + "\n"


def _counts(table) -> str:
    return ", ".join(f"{name} {n}" for name, n in table.items())


def build_parser():
    p = Parser("diff", description="Compare two recordings of the same program (e.g. a passing and a "
                                   "failing run): the first input that differs, where the runs took "
                                   "other paths, and a summary. Exit 0 when equivalent, 1 when they differ.",
               epilog="Inputs are compared per logical thread, call by call. Clock reads and "
                      "thread/process identities differ on every run: they are listed, never blamed.")
    p.add_argument("a", metavar="A", help="a recording")
    p.add_argument("b", metavar="B", help="the recording to compare it with")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("--debug", action="store_true", help=__import__("argparse").SUPPRESS)
    return p


def main(argv) -> int:
    opts = build_parser().parse_args(argv)
    report = compare(opts.a, opts.b)
    mask = Masker()

    def emit():
        if opts.json:
            sys.stdout.write(json.dumps(mask.data(report), indent=2, default=repr) + "\n")
        else:
            sys.stdout.write(mask(render(report)))
        sys.stdout.flush()
        return 0

    run_quietly_on_closed_pipe(emit)
    return 0 if report["equivalent"] else 1
