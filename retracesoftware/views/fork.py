"""``python -m retracesoftware fork PATH --at N (--result JSON | --raise EXC)``:
what if the call at event N had returned something else?

The program runs again (this process, with the recorded hash seed, argv and
sys.path). Its boundary calls are answered from the recording while it asks
the same questions (same function, same argument fingerprint, per thread);
the call at event N gets the new result or exception instead; from the first
call that differs from the recording the program runs live (one line on
stderr says at which event). The run is itself recorded (``--record NEW``,
else a temporary file): a what-if is replayable and diffable.

``--blame``: one fork per recorded call of a function (``--function``), each
with that call's result replaced by another recorded value (or ``--result``),
reporting which change the exit code or the output (bounded by ``--limit``).

Python: `fork(path, at, result=..., exception=..., record=None)` runs it in
this process (it executes the program: call it from a fresh process);
`parse_exception(text)` is the literal-only parser of ``--raise``;
`blame(path, function, ...)` runs forks in subprocesses.
"""
from __future__ import annotations

import ast
import atexit
import builtins
import collections
import json
import os
import subprocess
import sys
import tempfile
import weakref

from retracesoftware.recording import Handle, open_recording, summarise_value
from retracesoftware.runner import UsageError
from retracesoftware.views._common import Parser, int_arg

#: calls whose real effect the run needs while it is still answered from the
#: recording (thread identities, the exit trailer): always made live
ALWAYS_LIVE = frozenset({"retrace.exit", "retrace.thread.start", "retrace.thread.identify",
                         "retrace.output"})   # (output: its summary is of the real write)

_UNSET = object()


# ---------------------------------------------------------------- --raise
def parse_exception(text: str) -> BaseException:
    """``'ConnectionResetError(104, "reset")'`` -> the exception object.

    Literal-only: a (dotted) class name called with literal arguments
    (numbers, strings, bytes, tuples, lists, dicts, None, True/False).
    Builtin exceptions by name; ``module.Name`` among modules already
    imported (nothing is imported, nothing evaluated)."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise UsageError(f"--raise needs an exception like 'ConnectionResetError(104, \"reset\")', "
                         f"got {text!r}") from None
    if isinstance(node, (ast.Name, ast.Attribute)):
        func, args, kwargs = node, [], []
    elif isinstance(node, ast.Call):
        func, args, kwargs = node.func, node.args, node.keywords
    else:
        raise UsageError(f"--raise needs an exception class, optionally called with literals, got {text!r}")
    name = _dotted(func)
    if name is None:
        raise UsageError(f"--raise: {ast.unparse(func)!r} is not a class name")
    try:
        values = [ast.literal_eval(a) for a in args]
        kw = {k.arg: ast.literal_eval(k.value) for k in kwargs if k.arg is not None}
    except ValueError:
        raise UsageError(f"--raise: arguments must be literals (numbers, strings, tuples...), got {text!r}") from None
    if len(kw) != len(kwargs):
        raise UsageError("--raise: **kwargs are not allowed")
    cls = _exception_class(name)
    try:
        return cls(*values, **kw)
    except Exception as exc:
        raise UsageError(f"--raise: {name}{tuple(values)!r} cannot be made: {exc}") from None


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _exception_class(name):
    if "." not in name:
        cls = getattr(builtins, name, None)
    else:
        module, _, attr = name.rpartition(".")
        mod = sys.modules.get(module)
        cls = getattr(mod, attr, None) if mod is not None else None
        if mod is None:
            raise UsageError(f"--raise: module {module!r} is not imported here — use a builtin exception "
                             f"(OSError, ConnectionResetError, TimeoutError, ...)")
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise UsageError(f"--raise: {name!r} is not an exception class")
    return cls


# ---------------------------------------------------------------- the feeder
class Feeder:
    """Answers the forked run's boundary calls from the old recording, per
    logical thread, until the first call that differs; then everything is live."""

    def __init__(self, path, at, replacement, say):
        self.events = iter(open_recording(path).events())
        self.queues: dict = collections.defaultdict(collections.deque)
        self.waiting: dict = {}            # call index -> call event still without outcome
        self.at = at
        self.replacement = replacement     # ("result", value) or ("error", exc) or None
        self.live = False
        self.live_at = None
        self.replaced = False
        self.say = say
        self.bound: dict = {}              # binding index in the new run -> object (weak when possible)
        self.nbound = 0
        self.thread_id = None
        self.last_index = None

    # -- bindings of the new run, in order (they number like the old run's while faithful)
    def on_bind(self, obj):
        try:
            self.bound[self.nbound] = weakref.ref(obj)
        except TypeError:
            self.bound[self.nbound] = (lambda o: (lambda: o))(obj)
        self.nbound += 1

    def _next_for(self, tid):
        q = self.queues[tid]
        while not q:
            ev = next(self.events, None)
            if ev is None:
                return None
            t = ev.thread if ev.thread is not None else 0
            if ev.kind == "call":
                self.queues[t].append(ev)
                if ev.outcome is None:
                    self.waiting[ev.index] = ev
            elif ev.kind in ("result", "error") and ev.call_index in self.waiting:
                call = self.waiting.pop(ev.call_index)
                call.outcome, call.result, call.error = ev.kind, ev.result, ev.error
            elif ev.kind == "callback" and ev.thread in self.queues and self.queues[t]:
                self.queues[t][-1].kind = "call+callback"
        ev = q[0]
        while ev.outcome is None and ev.kind == "call":
            nxt = next(self.events, None)
            if nxt is None:
                break
            t = nxt.thread if nxt.thread is not None else 0
            if nxt.kind == "call":
                self.queues[t].append(nxt)
                if nxt.outcome is None:
                    self.waiting[nxt.index] = nxt
            elif nxt.kind in ("result", "error") and nxt.call_index in self.waiting:
                call = self.waiting.pop(nxt.call_index)
                call.outcome, call.result, call.error = nxt.kind, nxt.result, nxt.error
            elif nxt.kind == "callback" and t == (ev.thread or 0):
                ev.kind = "call+callback"
        return q.popleft()

    def wrap(self, target, name, fingerprint, entered):
        feeder = self

        def fed(*args, **kwargs):
            # Only a call the program made (through the gateway's `before`)
            # is answered; the gateway calls us directly for our runtime's
            # and for external code's calls: those are real.
            if not entered.__dict__.pop("on", False) or feeder.live:
                return target(*args, **kwargs)
            tid = feeder.thread_id()
            ev = feeder._next_for(tid)
            if name in ALWAYS_LIVE:
                if ev is not None and ev.function != name:
                    feeder.go_live(ev, name)
                return target(*args, **kwargs)
            if ev is None:
                feeder.go_live(None, name)
                return target(*args, **kwargs)
            if ev.function != name or ev.fingerprint != fingerprint(*args, **kwargs):
                feeder.go_live(ev, name)
                return target(*args, **kwargs)
            feeder.last_index = ev.index
            if ev.index == feeder.at and feeder.replacement is not None:
                feeder.replaced = True
                kind, value = feeder.replacement
                if kind != "error":
                    value = _shaped(value, ev.result)
                verb = "raises" if kind == "error" else "returns"
                feeder.say(f"event {ev.index}: {ev.call_text} {verb} {summarise_value(value)} "
                           f"instead of {ev.result_summary}")
                if kind == "error":
                    raise value
                return value
            if ev.kind != "call" or ev.outcome is None:
                # external code called the program back during it (or the
                # recording ends inside it): made live
                feeder.go_live(ev, name, why="the recorded call made callbacks")
                return target(*args, **kwargs)
            if ev.outcome == "error":
                raise _fresh(ev.error)
            return feeder.resolve(ev.result)
        fed.__name__ = getattr(target, "__name__", name)
        fed.__qualname__ = getattr(target, "__qualname__", name)
        fed.__wrapped__ = target
        return fed

    def go_live(self, ev, name, why=None):
        self.live = True
        if ev is None:
            self.live_at = self.last_index
            self.say(f"live from the end of the recording (after event {self.last_index}): "
                     f"the program called {name} after every recorded call")
        else:
            self.live_at = ev.index
            what = why or (f"the program called {name}" + ("" if ev.function != name else " with other arguments")
                           + f" where the recording has {ev.call_text}")
            self.say(f"live from event {ev.index}: {what}")

    def resolve(self, value):
        """A recorded value with its handles replaced by the new run's objects."""
        t = type(value)
        if t is Handle:
            ref = self.bound.get(value.index)
            obj = ref() if ref is not None else None
            if obj is None:
                obj = self.stub(value)
            return obj
        if t is tuple or t is list:
            items = [self.resolve(v) for v in value]
            return t(items)
        if t is dict:
            return {self.resolve(k): self.resolve(v) for k, v in value.items()}
        return value

    stub = None   # set by the session hook: Handle -> a stand-in object


def _fresh(exc):
    return exc


def _shaped(value, recorded):
    """A JSON value in the recorded result's shape: str -> bytes where bytes
    were recorded, list -> tuple where a tuple was."""
    if isinstance(recorded, bytes) and isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(recorded, tuple) and isinstance(value, list):
        return tuple(_shaped(v, r) for v, r in zip(value, list(recorded) + [None] * len(value)))
    return value


# ---------------------------------------------------------------- the run
def _locate(path, at):
    """The call event at index *at* (or the call of the result at *at*)."""
    for ev in open_recording(path).events():
        if ev.index > at and ev.kind != "result":
            if ev.index > at + 64:
                break
        if ev.index == at:
            if ev.kind == "call":
                return ev
            if ev.kind in ("result", "error") and ev.call_index is not None:
                return _locate(path, ev.call_index)
            raise UsageError(f"event {at} is a {ev.kind} event, not a call — pick a call's index "
                             f"from: python -m retracesoftware events {path} --kind call")
    raise UsageError(f"no event {at} in {path} — pick a call's index from: "
                     f"python -m retracesoftware events {path} --kind call")


def fork(path, at=None, *, result=_UNSET, exception=None, record=None, say=None) -> int:
    """Run the recorded program again with the call at event *at* answered
    by *result* (or raising *exception*); returns its exit code. Runs the
    program in this process: call it from a fresh one."""
    from retracesoftware import preamble as preamble_mod
    from retracesoftware.install.config import load_config
    from retracesoftware.install.record_session import RecordSession
    from retracesoftware.record_replay import current_hash_seed, forget_our_hash_seed, reexec_with_hash_seed
    from retracesoftware.runner import Target, execute, prepare_sys, report_exception
    from retracesoftware.utils import fingerprint

    rec = open_recording(path)
    pre = rec.preamble
    if "target" not in pre:
        from retracesoftware.utils.errors import RecordingFormatError
        raise RecordingFormatError(f"{path} has no retrace preamble — not a recording made by retracesoftware")
    say = say or (lambda line: (sys.stderr.write(f"retrace: fork: {line}\n"), sys.stderr.flush()))
    replacement = None
    if at is not None:
        call = _locate(path, at)
        at = call.index
        if exception is not None:
            replacement = ("error", exception)
        elif result is not _UNSET:
            replacement = ("result", result)
    seed = str(pre.get("hash_seed"))
    if current_hash_seed() != seed:
        reexec_with_hash_seed(seed)
    forget_our_hash_seed()

    target = Target.from_json(pre["target"])
    config = load_config()
    temp = None
    if record is None:
        fd, temp = tempfile.mkstemp(suffix=".retrace")
        os.close(fd)
        os.unlink(temp)
        record = temp
    new_pre = preamble_mod.build(target, hash_seed=seed, config_digest=config.digest,
                                 options={"stacks": False, "hash_seed_pinned_by_retrace": True,
                                          "redacted": [], "forked_from": {"path": os.path.abspath(path),
                                                                          "at": at}})
    session = RecordSession(record, new_pre, config)
    feeder = Feeder(path, at, replacement, say)
    _attach(session.system, feeder, fingerprint)
    sys.argv[:] = list(pre.get("argv", sys.argv))
    sys.path[:] = list(pre.get("sys_path", sys.path))
    try:
        prepare_sys(target)
        session.start()
    except BaseException:
        session.abandon()
        raise

    outcome = {"code": None}

    def finish():
        try:
            session.close()
        finally:
            if temp is not None:
                try:
                    os.unlink(temp)
                except OSError:
                    pass
        # The runtime is half torn down from here (a live run's objects have
        # the recorded world's handles): end now, as the program ended.
        if outcome["code"] is not None:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(outcome["code"])
    atexit.register(finish)   # first: runs last, after the program's own handlers
    try:
        session.run(execute, target)
        code = 0
    except BaseException as exc:
        code = session.report(report_exception, exc)
    session.main_finished(code)
    outcome["code"] = code
    if replacement is not None and not feeder.replaced:
        say(f"event {at} was not reached: the run went live first (at event {feeder.live_at})")
    if not feeder.live:
        say("the program asked the recording's questions to the end: no call was made live")
    return code


def _attach(system, feeder, fingerprint):
    """Make *system* (record mode) answer from *feeder*: its gateways call
    the feeder instead of the real functions (proxy's System.feed_calls)."""
    feeder.thread_id = system.thread_id
    system.feed_calls(lambda target, name, entered: feeder.wrap(target, name, fingerprint, entered),
                      feeder.on_bind)

    def stub(handle):
        cls = system.type_named(handle.typename or "")
        if cls is None:
            return handle
        return system.stub_factory.create(cls)

    feeder.stub = stub


# ---------------------------------------------------------------- --blame
def blame(path, function, *, result=_UNSET, limit=20, progress=None, timeout=120) -> list[dict]:
    """For each recorded call of *function* (at most *limit*), fork with its
    result replaced by *result* or by another value the recording has for
    that function; which forks change the exit code or stdout."""
    calls = [ev for ev in open_recording(path).events() if ev.kind == "call" and ev.function == function
             and ev.outcome == "result"]
    if not calls:
        raise UsageError(f"no recorded call of {function!r} with a result in {path} — see "
                         f"python -m retracesoftware events {path} --kind call")
    base = _run_fork(path, [], timeout)
    out = []
    calls = calls[:limit]
    values = []
    for ev in calls:
        if ev.result not in values:
            values.append(ev.result)
    for n, ev in enumerate(calls, 1):
        if result is not _UNSET:
            new = result
        else:
            others = [v for v in values if v != ev.result]
            if not others:
                continue
            new = others[0]
        try:
            encoded = json.dumps(new.decode("utf-8", "surrogateescape") if isinstance(new, bytes) else new)
        except TypeError:
            continue
        if progress:
            progress(f"blame {n}/{len(calls)}: event {ev.index} {ev.call_text} -> {summarise_value(new, 40)}")
        run = _run_fork(path, ["--at", str(ev.index), "--result", encoded], timeout)
        changed = run.returncode != base.returncode or run.stdout != base.stdout
        out.append({"index": ev.index, "call": ev.call_text, "recorded": ev.result_summary,
                    "replaced_by": summarise_value(new), "exit_code": run.returncode,
                    "output_changed": run.stdout != base.stdout, "changes_outcome": changed})
    return out


def _run_fork(path, extra, timeout):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "retracesoftware", "fork", path, *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)


# ---------------------------------------------------------------- CLI
def build_parser():
    p = Parser("fork", description="Run a recorded program again, answering its calls from the "
                                   "recording, with the call at event N given another result or "
                                   "exception; live from the first call that differs.",
               epilog="Event numbers are those of `events` (a call's index). --result takes JSON "
                      "(a string stands for bytes where bytes were recorded, a list for a tuple). "
                      "--raise takes a class and literal arguments, nothing is evaluated.")
    p.add_argument("recording", metavar="PATH", help="the recording")
    p.add_argument("--at", type=int_arg("--at"), metavar="N", help="the call's event index")
    p.add_argument("--result", metavar="JSON", help="the value the call returns instead")
    p.add_argument("--raise", dest="raise_", metavar="EXC", help="the exception it raises instead, "
                   "e.g. 'ConnectionResetError(104, \"reset\")'")
    p.add_argument("--record", metavar="NEW", help="keep the forked run's recording at NEW (replayable, diffable)")
    p.add_argument("--blame", action="store_true", help="fork once per recorded call of --function with "
                   "another recorded value (or --result) and report which change the exit code or output")
    p.add_argument("--function", metavar="NAME", help="for --blame: the boundary function (see events)")
    p.add_argument("--limit", type=int_arg("--limit"), default=20, help="for --blame: at most N forks (20)")
    p.add_argument("--json", action="store_true", help="for --blame: the report as JSON")
    p.add_argument("--debug", action="store_true", help=__import__("argparse").SUPPRESS)
    return p


def main(argv) -> int:
    opts = build_parser().parse_args(argv)
    if not os.path.exists(opts.recording):
        from retracesoftware.utils.errors import RecordingFormatError
        raise RecordingFormatError(f"recording {opts.recording} does not exist — check the path")
    result = _UNSET
    if opts.result is not None:
        try:
            result = json.loads(opts.result)
        except ValueError as exc:
            raise UsageError(f"--result needs a JSON value (e.g. '\"text\"', 42, null), got {opts.result!r}: "
                             f"{exc.msg}") from None
    if opts.blame:
        if not opts.function:
            raise UsageError("--blame needs --function NAME (a boundary function, see events)")
        report = blame(opts.recording, opts.function, result=result, limit=max(1, opts.limit),
                       progress=lambda line: (sys.stderr.write(f"retrace: {line}\n"), sys.stderr.flush()))
        if opts.json:
            sys.stdout.write(json.dumps(report, indent=2) + "\n")
        else:
            for row in report:
                mark = "CHANGES" if row["changes_outcome"] else "same   "
                sys.stdout.write(f"{mark} event {row['index']:>8}  {row['call']} -> {row['replaced_by']} "
                                 f"(recorded {row['recorded']}; exit code {row['exit_code']}"
                                 f"{', output differs' if row['output_changed'] else ''})\n")
        return 0
    exception = None
    if opts.raise_ is not None:
        if result is not _UNSET:
            raise UsageError("give --result or --raise, not both")
        exception = parse_exception(opts.raise_)
    if (result is not _UNSET or exception is not None) and opts.at is None:
        raise UsageError("--result/--raise need --at N (a call's event index, see events)")
    if opts.at is not None and result is _UNSET and exception is None:
        raise UsageError("--at needs --result JSON or --raise EXC")
    return fork(opts.recording, opts.at, result=result, exception=exception, record=opts.record)
