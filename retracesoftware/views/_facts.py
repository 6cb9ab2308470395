"""What a run did, gathered in one streaming pass: the facts the report,
the summary and the MCP server show.

Everything is bounded whatever the size of the recording (counters, capped
lists, a fixed number of timeline buckets, a sample of events), and says
when it had to cut (``truncated``).
"""
from __future__ import annotations

import collections
import os
import re

from retracesoftware.views import _tape

#: buckets of the per-thread timeline (the report's overview of any size of run)
BUCKETS = 1000
#: events kept individually for the detail view; more are sampled evenly
SAMPLE = 20000
CAP = 200          # entries per input/output kind, exceptions, ...
SLOWEST = 15

_QUOTED = re.compile(r"""(?:'([^'\\]*(?:\\.[^'\\]*)*)'|"([^"\\]*(?:\\.[^"\\]*)*)")""")
_ADDRESS = re.compile(r"\(\s*'([^']+)'\s*,\s*(\d+)")
_URL = re.compile(r"\b(?:https?|wss?|ftp)://[^\s'\"<>]+")
_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|WITH|REPLACE)\b", re.I)


def _first_string(text):
    if not text:
        return None
    m = _QUOTED.search(text)
    if m:
        return m.group(1) if m.group(1) is not None else m.group(2)
    return None


def classify(name: str, args, result):
    """(kind, direction, what) for an input/output of the run, or None.

    kind: file, env, network, subprocess, sql, url. ``args`` is the argument
    summary recorded by the events API (docs/EVENTS.md), or None for
    recordings without summaries (then only the function is known)."""
    n = (name or "").lower()
    text = args if isinstance(args, str) else (None if args is None else _tape.short(args, 300))
    if "environ" in n or "getenv" in n:
        return "env", "read", _first_string(text) or "(name not recorded)"
    if "sqlite3" in n and ("execute" in n or "executemany" in n or "executescript" in n):
        return "sql", "query", _first_string(text) or "(statement not recorded)"
    if text and _SQL.match(_first_string(text) or ""):
        return "sql", "query", _first_string(text)
    if "subprocess" in n or "fork_exec" in n or "spawn" in n or n.endswith(".system") or "execv" in n:
        return "subprocess", "run", text or "(argv not recorded)"
    if "socket" in n or "getaddrinfo" in n or "gethostbyname" in n or "ssl" in n:
        if any(k in n for k in ("connect", "getaddrinfo", "gethostbyname", "create_connection", "sendto")):
            m = _ADDRESS.search(text or "")
            what = f"{m.group(1)}:{m.group(2)}" if m else (_first_string(text) or "(address not recorded)")
            return "network", "connect", what
        if n.endswith(".bind"):
            m = _ADDRESS.search(text or "")
            return "network", "listen", f"{m.group(1)}:{m.group(2)}" if m else "(address not recorded)"
        if n.endswith(".accept"):
            m = _ADDRESS.search(_tape.short(result, 300) or "")
            return "network", "accept", f"{m.group(1)}:{m.group(2)}" if m else "(peer)"
        return None
    if text and _URL.search(text):
        return "url", "request", _URL.search(text).group(0)
    if any(k in n for k in ("open", "stat", "listdir", "scandir", "unlink", "remove", "rename", "mkdir",
                            "rmdir", "readlink", "access", "chmod", "utime", "truncate")):
        if n.startswith(("posix.", "os.", "io.", "builtins.", "_io.", "nt.", "pathlib.", "shutil.")) or "open" in n:
            path = _first_string(text)
            if path is None and "stat" in n:
                return None          # fstat of a descriptor: not a path
            write = any(k in n for k in ("unlink", "remove", "rename", "mkdir", "rmdir", "chmod", "utime", "truncate"))
            if "open" in n and text:
                write = write or _opens_for_writing(text[len(path) + 2:] if path else text)
            return "file", "write" if write else "read", path or "(path not recorded)"
    return None


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _opens_for_writing(rest: str) -> bool:
    """From the rest of an open's argument summary: a mode string with
    w/a/x/+, or integer flags asking for writing (``posix.open(path, flags)``)."""
    mode = _first_string(rest)
    if mode is not None:
        return any(c in mode for c in "wax+")
    m = re.search(r"-?\d+", rest)
    return bool(m) and bool(int(m.group(0)) & _WRITE_FLAGS)


class Facts:
    """Everything the views show about one recording."""

    def __init__(self):
        self.preamble = {}
        self.events = 0
        self.last_index = -1
        self.kinds = collections.Counter()
        self.functions = collections.Counter()
        self.errors_by_function = collections.Counter()
        self.threads = collections.OrderedDict()       # logical id -> {"events", "first", "last"}
        self.io = collections.OrderedDict((k, collections.OrderedDict()) for k in
                                          ("file", "env", "network", "subprocess", "sql", "url"))
        self.io_truncated = False
        self.exceptions = []          # boundary calls that raised
        self.exceptions_total = 0
        self.switches = []            # (index, from thread, to thread), capped
        self.switches_total = 0
        self.sample = []              # events kept individually (dicts)
        self.sample_every = 1
        self.slowest = []             # (waited events, event dict)
        self.exit_code = None
        self.ended_at = None
        self.summaries = False        # argument summaries present
        self.damage = None
        self.timeline = {}            # thread -> [[calls, syncs, callbacks, errors] per bucket]
        self.bucket_size = 1
        self.run = None               # InstrumentedRun, when replayed

    # ------------------------------------------------------------ derived
    @property
    def program(self) -> str:
        target = self.preamble.get("target") or {}
        kind, value, args = target.get("kind"), target.get("value"), target.get("args", [])
        if kind == "module":
            words = ["python", "-m", value, *args]
        elif kind == "code":
            words = ["python", "-c", value, *args]
        else:
            words = ["python", value or "?", *args]
        return " ".join(str(w) for w in words)

    @property
    def duration_s(self):
        started = self.preamble.get("started_at")
        if isinstance(started, (int, float)) and isinstance(self.ended_at, (int, float)):
            return self.ended_at - started
        return None

    @property
    def complete(self) -> bool:
        return self.exit_code is not None or self.ended_at is not None

    @property
    def faithful(self):
        return None if self.run is None else self.run.faithful

    def processes(self) -> list:
        path = self.preamble.get("_path")
        try:
            from retracesoftware.children import processes
            return [{"pid": p["pid"], "parent_pid": p["parent_pid"], "kind": p["kind"]}
                    for p in processes(path)]
        except Exception:
            return []


def gather(path, run=None, *, progress=None, sample=SAMPLE, buckets=BUCKETS) -> Facts:
    """One pass over *path* (and the instrumented *run*, if given)."""
    facts = Facts()
    facts.run = run
    facts.preamble = dict(_tape.preamble(path))
    facts.preamble["_path"] = os.path.abspath(path)
    size = os.path.getsize(path)
    # Timeline buckets by event index: the event count is not known before
    # the pass; estimate it from the file size (a few bytes per event) and
    # merge buckets pairwise when the estimate is passed.
    per_bucket = max(1, size // 6 // buckets)
    facts.bucket_size = per_bucket
    last_event_of_thread = {}     # thread -> number of boundary events when it made its last one
    last_thread = None
    kept = 0
    seen = 0
    reads = run.reads() if run is not None else None
    _tape.walk.damage = None
    for event in _tape.walk(path, reads=reads):
        facts.events += 1
        index = event.index
        facts.last_index = max(facts.last_index, event.end_index)
        facts.kinds[event.kind] += 1
        thread = event.thread
        info = facts.threads.get(thread)
        if info is None:
            info = facts.threads[thread] = {"events": 0, "first": index, "last": index, "functions": collections.Counter()}
        info["events"] += 1
        info["last"] = max(info["last"], index)
        if last_thread is not None and thread != last_thread:
            facts.switches_total += 1
            if len(facts.switches) < 20000:
                facts.switches.append((index, str(last_thread), str(thread)))
        last_thread = thread
        name = event.name or event.kind
        if event.kind == "call" and name == "retrace.exit":
            if isinstance(event.result, tuple) and len(event.result) == 2:
                facts.exit_code, facts.ended_at = event.result
            continue
        if event.kind == "call":
            facts.functions[name] += 1
            if len(info["functions"]) < 500 or name in info["functions"]:
                info["functions"][name] += 1
        if event.args is not None:
            facts.summaries = True
        # timeline
        while index // per_bucket >= buckets:
            per_bucket *= 2
            for lanes in facts.timeline.values():
                merged = [[a + b for a, b in zip(lanes[i], lanes[i + 1])] for i in range(0, len(lanes), 2)]
                lanes[:] = merged + [[0, 0, 0, 0] for _ in range(buckets - len(merged))]
        facts.bucket_size = per_bucket
        lanes = facts.timeline.get(str(thread))
        if lanes is None:
            lanes = facts.timeline[str(thread)] = [[0, 0, 0, 0] for _ in range(buckets)]
        column = 3 if event.error is not None else {"call": 0, "sync": 1, "callback": 2}.get(event.kind, 0)
        lanes[index // per_bucket][column] += 1
        # inputs and outputs
        if event.kind == "call":
            found = classify(name, event.args, event.result)
            if found is not None:
                kind, direction, what = found
                table = facts.io[kind]
                key = (direction, what)
                entry = table.get(key)
                if entry is None:
                    if len(table) >= CAP:
                        facts.io_truncated = True
                    else:
                        table[key] = {"direction": direction, "what": what, "count": 1, "first": index,
                                      "function": name}
                else:
                    entry["count"] += 1
        # exceptions
        if event.error is not None and event.kind in ("call", "callback", "sync", "callback_error"):
            facts.exceptions_total += 1
            facts.errors_by_function[name] += 1
            if len(facts.exceptions) < CAP:
                facts.exceptions.append({"index": index, "thread": str(thread), "function": name,
                                         "error": _tape.short(event.error, 200),
                                         "where": run.where(event.where) if run is not None else None,
                                         "stack": [f"{os.path.basename(str(f[0]))}:{f[1]} in {f[2]}"
                                                   for f in (event.stack or ())
                                                   if isinstance(f, (tuple, list)) and len(f) == 3][-8:]})
        # longest waits: events of other threads since this thread's previous event
        previous = last_event_of_thread.get(thread)
        last_event_of_thread[thread] = facts.events
        if event.kind in ("call", "sync") and previous is not None:
            waited = facts.events - previous - 1
            if waited > 0 and (len(facts.slowest) < SLOWEST or waited > facts.slowest[-1][0]):
                facts.slowest.append((waited, _event_dict(event, run)))
                facts.slowest.sort(key=lambda item: -item[0])
                del facts.slowest[SLOWEST:]
        # detail sample
        if event.kind != "value":
            if kept >= sample:
                # keep every other one from now on (an even sample of the run)
                facts.sample = facts.sample[::2]
                kept = len(facts.sample)
                facts.sample_every *= 2
            if seen % facts.sample_every == 0:
                facts.sample.append(_event_dict(event, run))
                kept += 1
            seen += 1
    facts.damage = _tape.walk.damage
    facts.bucket_size = per_bucket
    used = (facts.last_index // per_bucket) + 1 if facts.last_index >= 0 else 0
    for lanes in facts.timeline.values():
        del lanes[max(used, 1):]
    return facts


def _event_dict(event, run):
    d = {"i": event.index, "t": str(event.thread), "k": event.kind, "n": event.name or event.kind}
    if event.args is not None:
        d["a"] = _tape.short(event.args, 160)
    if event.result is not None:
        d["r"] = _tape.short(event.result, 100)
    if event.error is not None:
        d["e"] = _tape.short(event.error, 160)
    if run is not None and event.where is not None and event.where >= 0:
        d["w"] = run.where(event.where)
    if event.time_ns is not None and run is not None:
        d["ts"] = event.time_ns
    return d


def architecture(run, *, max_nodes=300, max_edges=1500) -> dict:
    """Modules and classes of the project's code as boxes, calls between
    them as edges weighted by count (from the instrumented replay)."""
    if run is None:
        return {"modules": [], "edges": [], "truncated": False, "faithful": None, "problem": None}
    units = {}
    calls_of_unit = collections.Counter()

    def unit(slot):
        module, cls = run.unit_of(slot)
        key = f"{module}.{cls}" if cls else module
        if key not in units:
            units[key] = {"id": key, "module": module, "class": cls, "functions": collections.Counter()}
        return key

    calls = run.meta.get("calls", [])
    for slot in range(len(run.codes)):
        key = unit(slot)
        count = calls[slot] if slot < len(calls) else 0
        calls_of_unit[key] += count
        units[key]["functions"][run.codes[slot][1]] += count
    edges = collections.Counter()
    for caller, callee, count in run.meta.get("edges", []):
        if caller < 0 or caller >= len(run.codes) or callee >= len(run.codes):
            continue
        a, b = unit(caller), unit(callee)
        if a != b:
            edges[(a, b)] += count
    ranked = [key for key, _ in calls_of_unit.most_common(max_nodes)]
    keep = set(ranked)
    modules = collections.OrderedDict()
    for key in ranked:
        info = units[key]
        box = modules.setdefault(info["module"], {"name": info["module"], "units": [], "calls": 0})
        box["calls"] += calls_of_unit[key]
        box["units"].append({"id": key, "class": info["class"], "calls": calls_of_unit[key],
                             "functions": info["functions"].most_common(8)})
    edge_list = [{"from": a, "to": b, "count": c} for (a, b), c in edges.most_common()
                 if a in keep and b in keep]
    return {"modules": list(modules.values()), "edges": edge_list[:max_edges],
            "truncated": len(units) > max_nodes or len(edge_list) > max_edges,
            "units_total": len(units),
            # an unfaithful replay's map holds only what ran before it stopped
            # (nothing, if it never started): the views say so
            "faithful": run.faithful, "problem": run.problem}
