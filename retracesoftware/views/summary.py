"""``python -m retracesoftware summary PATH [-o run.md] [--budget TOKENS] [--against OTHER]``:
a Markdown brief of a recorded run for a person or an AI assistant.

Sections, most important first: what ran (and how it ended), the failure
(the uncaught exception and its stack, boundary calls that raised), inputs by
kind, outputs, the longest waits, threads, the project's architecture (from
an instrumented replay), the first difference from another recording
(``--against``), and "Questions to ask" pointing at event indices (the seeds'
``ask.md``).

**Budget**: tokens are counted as ``len(text) / 4`` (characters over four, a
common rule of thumb for English and code; real tokenizers differ by ±25 %).
The brief is cut to fit: lists are shortened first (each says how many it
left out), whole low-priority sections are dropped last. Secrets are
redacted (install/masking.py: values of secret-looking environment
variables, tokens, passwords in URLs and options).
"""
from __future__ import annotations

import os

from retracesoftware.views import _output as _common
from retracesoftware.views import _facts
from retracesoftware.views import _tape
from retracesoftware.views.instrumented_run import run_instrumented

DEFAULT_BUDGET = 2000
CHARS_PER_TOKEN = 4


def tokens(text: str) -> int:
    """The budget's measure: characters / 4, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def first_difference(a, b) -> dict | None:
    """The first boundary event where recordings *a* and *b* differ,
    comparing each thread's events in order (function, result/exception).
    None when they agree. (`views.diff`, when installed, is the full diff.)"""
    streams = {}
    pending_a, pending_b = {}, {}

    def key(e):
        return (e.kind, e.name, _tape.short(e.result, 200), _tape.short(e.error, 200))

    def program_events(path):
        # retrace.* calls are the runtime's own (thread idents, exit): they
        # differ between any two runs and say nothing about the program.
        for e in _tape.walk(path):
            if e.kind != "value" and not (e.name or "").startswith("retrace."):
                yield e

    ia, ib = program_events(a), program_events(b)
    done_a = done_b = False
    while not (done_a and done_b):
        if not done_a:
            ea = next(ia, None)
            if ea is None:
                done_a = True
            else:
                pending_a.setdefault(str(ea.thread), []).append(ea)
        if not done_b:
            eb = next(ib, None)
            if eb is None:
                done_b = True
            else:
                pending_b.setdefault(str(eb.thread), []).append(eb)
        for thread in set(pending_a) & set(pending_b):
            qa, qb = pending_a[thread], pending_b[thread]
            while qa and qb:
                x, y = qa.pop(0), qb.pop(0)
                streams[thread] = streams.get(thread, 0) + 1
                if key(x) != key(y):
                    return _difference(thread, streams[thread], x, y)
    for thread in set(pending_a) | set(pending_b):
        qa, qb = pending_a.get(thread, []), pending_b.get(thread, [])
        if qa or qb:
            x = qa[0] if qa else None
            y = qb[0] if qb else None
            return _difference(thread, streams.get(thread, 0) + 1, x, y)
    return None


def _diff(a, b):
    """The diff command's report (views/diff.py) as lines, or this module's
    first difference when that command is not installed."""
    try:
        from retracesoftware.views import diff as diff_mod
    except ImportError:
        return first_difference(a, b)
    report = diff_mod.compare(a, b)
    if report.get("equivalent"):
        return None
    return {"lines": [line for line in diff_mod.render(report).splitlines() if line.strip()]}


def _difference(thread, nth, x, y) -> dict:
    def side(e):
        if e is None:
            return {"index": None, "function": "(no more events: the run ended)", "outcome": None}
        return {"index": e.index, "function": e.name or e.kind, "args": e.args,
                "outcome": f"raised {_tape.short(e.error)}" if e.error is not None else _tape.short(e.result)}
    return {"thread": thread, "nth": nth, "a": side(x), "b": side(y)}


# ------------------------------------------------------------------ sections
class _Section:
    def __init__(self, title, intro="", items=(), priority=5, limit=None, more=""):
        self.title = title
        self.intro = intro
        self.items = list(items)
        self.priority = priority
        self.limit = len(self.items) if limit is None else min(limit, len(self.items))
        self.more = more

    def render(self) -> str:
        if not self.intro and not self.items:
            return ""
        out = [f"## {self.title}", ""]
        if self.intro:
            out.append(self.intro)
            out.append("")
        shown = self.items[: self.limit]
        out.extend(shown)
        left = len(self.items) - len(shown)
        if left > 0:
            out.append(f"- … {left} more{self.more}")
        if shown or left:
            out.append("")
        return "\n".join(out) + "\n"


def _sections(facts, run, diff, other) -> tuple[str, list]:
    pre = facts.preamble
    status = (f"exit code {facts.exit_code}" if facts.complete
              else "did not finish (killed, or the recording is damaged" + (f": {facts.damage}" if facts.damage else "") + ")")
    duration = f"{facts.duration_s:.3f} s" if isinstance(facts.duration_s, (int, float)) else "unknown time"
    faithful = ("not replayed" if facts.faithful is None else
                "yes" if facts.faithful else f"NO — {run.problem}")
    head = [f"# Run: `{facts.program}`", "",
            f"- recorded with Python {(pre.get('python_version') or '?').split()[0]}, pid {pre.get('pid')}, "
            f"cwd `{pre.get('cwd')}`; ran {duration}; {status}",
            f"- {facts.last_index + 1:,} tape events, {facts.events:,} boundary events "
            f"({', '.join(f'{k} {v:,}' for k, v in sorted(facts.kinds.items()))}); "
            f"{len(facts.threads)} thread(s); {1 + len(facts.processes())} process(es)",
            f"- replay faithful: {faithful}",
            f"- recording: `{pre.get('_path')}` (event indices below are those of "
            f"`python -m retracesoftware events` and divergence reports)", ""]
    sections = []
    failed = facts.exit_code not in (0, None) or not facts.complete
    # failure
    items = []
    if run is not None and run.program_traceback:
        items.append("```\n" + "\n".join(run.program_traceback[-30:]) + "\n```")
    for x in facts.exceptions:
        where = f" in {x['where']}" if x.get("where") else ""
        stack = f" (stack: {' ← '.join(reversed(x['stack']))})" if x.get("stack") else ""
        items.append(f"- event {x['index']} (thread {x['thread']}): `{x['function']}` raised `{x['error']}`{where}{stack}")
    if items:
        sections.append(_Section("Failure" if failed else "Exceptions", "", items, priority=0 if failed else 3,
                                 more=f" (of {facts.exceptions_total} boundary calls that raised)"))
    # inputs / outputs
    inputs, outputs = [], []
    for kind, table in facts.io.items():
        for entry in table.values():
            line = (f"- {kind}: {entry['direction']} `{entry['what']}` ×{entry['count']} "
                    f"(first at event {entry['first']}, `{entry['function']}`)")
            (outputs if entry["direction"] in ("write", "run", "query", "listen") else inputs).append(line)
    note = "" if facts.summaries else ("(No argument summaries in this recording: names/paths are not "
                                       "known, the calls are listed by function.)")
    sections.append(_Section("Inputs", note, inputs or ["- none recorded"], priority=1))
    sections.append(_Section("Outputs", "", outputs or ["- none recorded"], priority=2))
    busiest = [f"- `{name}` ×{count:,}" for name, count in facts.functions.most_common(15)]
    sections.append(_Section("Busiest boundary functions", "", busiest, priority=4))
    waits = [f"- event {e['i']} (thread {e['t']}): `{e['n']}` after {w:,} boundary events of other threads"
             + (f", in {e['w']}" if e.get("w") else "") for w, e in facts.slowest]
    if waits:
        sections.append(_Section("Slowest boundary calls (longest waits)",
                                 "Durations are not recorded; a call during which other threads made many "
                                 "events was blocked (lock, socket, sleep) or descheduled.", waits, priority=4))
    threads = [f"- thread {t}: {info['events']:,} events (#{info['first']}–#{info['last']}); "
               + ", ".join(f"`{n}` ×{c}" for n, c in info["functions"].most_common(3)) for t, info in facts.threads.items()]
    sections.append(_Section("Threads", f"{facts.switches_total:,} thread switches.", threads, priority=5))
    if run is not None:
        arch = _facts.architecture(run, max_nodes=60, max_edges=60)
        units = [f"- {u['id']} ×{u['calls']:,}: " + ", ".join(f[0] for f in u["functions"][:4])
                 for m in arch["modules"] for u in m["units"]]
        edges = [f"- {e['from']} → {e['to']} ×{e['count']:,}" for e in arch["edges"]]
        if units:
            sections.append(_Section("Architecture (project code: modules/classes, calls)", "", units + edges,
                                     priority=6))
    if other is not None:
        if diff is None:
            items = [f"- no difference: `{other}` made the same boundary calls with the same results"]
        elif "lines" in diff:
            items = [f"    {line}" for line in diff["lines"]]
        else:
            a, b = diff["a"], diff["b"]
            items = [f"- first difference: thread {diff['thread']}, its event #{diff['nth']}",
                     f"  - this run: event {a['index']}: `{a['function']}` → `{a['outcome']}`",
                     f"  - `{other}`: event {b['index']}: `{b['function']}` → `{b['outcome']}`"]
        sections.append(_Section("Difference from the other recording", "", items, priority=1))
    # questions
    questions = []
    if failed and run is not None and run.program_traceback:
        questions.append(f"- Why did the program end with `{run.program_traceback[-1].strip()}`? Replay to the "
                         f"last event ({facts.last_index}) with `python -m retracesoftware --recording "
                         f"{os.path.basename(str(pre.get('_path')))} --pdb`.")
    for x in facts.exceptions[:3]:
        questions.append(f"- What did the program do after `{x['function']}` raised at event {x['index']}? "
                         f"(`events --from {max(0, x['index'] - 5)} --to {x['index'] + 20}`)")
    if diff is not None and "lines" in diff:
        questions.append(f"- Which input made the runs differ? `python -m retracesoftware diff` "
                         f"{os.path.basename(str(pre.get('_path')))} {os.path.basename(str(other))}, then "
                         f"`fork --at` the first differing input.")
    if diff is not None and "a" in diff:
        questions.append(f"- Which input made the runs differ? Compare event {diff['a']['index']} with "
                         f"event {diff['b']['index']} of the other recording (`diff`, `fork --at "
                         f"{diff['a']['index']}`).")
    for w, e in facts.slowest[:2]:
        questions.append(f"- What was thread {e['t']} waiting for before event {e['i']} (`{e['n']}`)?")
    if not questions:
        questions.append(f"- Which inputs does the output depend on? Try `fork` at an input event and compare.")
    sections.append(_Section("Questions to ask", "", questions, priority=1))
    return "\n".join(head) + "\n", sections


def _fit(head, sections, budget) -> str:
    def text():
        body = "".join(s.render() for s in sorted(sections, key=lambda s: s.priority))
        return head + body
    from retracesoftware.install.masking import mask
    out = mask(text())
    # Shorten the longest lists first, then drop the lowest-priority sections.
    while tokens(out) > budget:
        longest = max(sections, key=lambda s: s.limit if s.items else -1, default=None)
        if longest is not None and longest.limit > 3:
            longest.limit = max(3, longest.limit * 2 // 3)
        else:
            droppable = [s for s in sections if s.priority > 0 and s.title != "Questions to ask"]
            if droppable:
                sections.remove(max(droppable, key=lambda s: s.priority))
            elif any(s.limit > 1 for s in sections):
                for s in sections:
                    s.limit = max(1, s.limit - 1)
            else:
                cut = budget * CHARS_PER_TOKEN - 80
                return out[:max(0, cut)] + "\n\n… (cut to the token budget)\n"
        out = mask(text())
    return out


def build_summary(path, *, budget=DEFAULT_BUDGET, against=None, replay=True, progress=None, force=False) -> str:
    """The Markdown brief of recording *path* within *budget* tokens (chars/4)."""
    _common.check_recording(path)
    if against is not None:
        _common.check_recording(against)
    run = run_instrumented(path, spans=False, progress=progress,
                           replay_args=["--force"] if force else ()) if replay else None
    try:
        facts = _facts.gather(path, run, sample=1000)
        diff = _diff(path, against) if against is not None else None
        head, sections = _sections(facts, run, diff, against)
        text = _fit(head, sections, budget)
    finally:
        if run is not None:
            run.close()
    return text


def main(argv) -> int:
    p = _common.parser("summary", "Write a Markdown brief of a recorded run (for people and AI "
                                  "assistants), within a token budget (tokens = characters / 4).")
    p.add_argument("recording")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET, metavar="TOKENS",
                   help=f"at most this many tokens, counted as characters/4 (default {DEFAULT_BUDGET})")
    p.add_argument("--against", metavar="OTHER", help="a second recording of the same program: "
                                                     "report the first difference")
    p.add_argument("--no-replay", action="store_true", help="do not replay (no architecture, no traceback)")
    p.add_argument("--force", action="store_true",
                   help="replay even if the Python version, sources or configs differ from the recording's")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.budget < 50:
        raise _common.UsageError("--budget needs at least 50 tokens")
    progress = _common.Progress("replaying", quiet=args.quiet)
    text = build_summary(args.recording, budget=args.budget, against=args.against,
                         replay=not args.no_replay, progress=progress, force=args.force)
    progress.done()
    with _common.open_output(args.output) as fh:
        fh.write(text)
    return 0
