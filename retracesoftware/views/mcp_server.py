"""``python -m retracesoftware mcp``: an MCP server on stdio for AI agents.

Tools over recordings on this machine (paths as the server's process sees
them): ``summary``, ``events`` (filters), ``diff``, ``stack_at(event)``,
``eval_at(event, expression)`` and ``fork``. Everything is computed here,
offline, from the recording and replays of it: nothing leaves the machine.

Needs the official MCP SDK: ``pip install 'retracesoftware[mcp]'`` (the
``mcp`` package, 1.x or 2.x). Each tool is also a plain function in this
module, so a Python user can call the same things without MCP.
"""
from __future__ import annotations

import os

from retracesoftware.views import _output as _common
from retracesoftware.views import _tape

EVENTS_LIMIT = 1000

INSTRUCTIONS = """Recordings made with retracesoftware (deterministic record/replay for Python).
Start with `summary` on a recording; use `events` to list boundary events (index, thread, kind,
function, arguments, result) with filters; `stack_at`/`eval_at` replay the program to an event
index and show its Python stack there or evaluate an expression in its innermost frame; `diff`
compares two recordings of the same program; `fork` replays to an event and continues with a
different result. Event indices are the ones every tool and the CLI use."""


def _path(recording: str) -> str:
    path = os.path.abspath(os.path.expanduser(recording))
    _common.check_recording(path)
    return path


def tool_summary(recording: str, budget: int = 2000, against: str | None = None) -> str:
    """A Markdown brief of the recorded run within `budget` tokens (chars/4)."""
    from retracesoftware.views.summary import build_summary
    return build_summary(_path(recording), budget=max(50, int(budget)),
                         against=_path(against) if against else None,
                         progress=_common.Progress("replaying", quiet=True))


def tool_events(recording: str, thread: str | None = None, grep: str | None = None, kind: str | None = None,
                start: int = 0, end: int | None = None, limit: int = 200) -> str:
    """Events of the recording in replay order, one line each: index, pid/thread, kind,
    function(arguments) -> result. Filters: thread (logical id, 0 = main), grep (text),
    kind (call, result, error, callback, sync, ...), start/end (event index), limit."""
    from retracesoftware.install.masking import mask
    path = _path(recording)
    limit = max(1, min(int(limit), EVENTS_LIMIT))
    try:
        from retracesoftware.views.events import list_events   # the events command, when installed
    except ImportError:
        list_events = None
    lines = []
    more = False
    if list_events is not None:
        tid = None if thread is None else (int(thread) if str(thread).isdigit() else thread)
        for ev in list_events(path, thread=tid, grep=grep, start=start, stop=end,
                              kinds=[kind] if kind else None):
            if len(lines) >= limit:
                more = True
                break
            lines.append(ev.line(width=200))
    else:
        for e in _tape.walk(path):
            if e.kind == "value" or e.index < start or (end is not None and e.index > end):
                continue
            if (thread is not None and str(e.thread) != str(thread)) or (kind is not None and e.kind != kind):
                continue
            outcome = f"raised {_tape.short(e.error)}" if e.error is not None else (_tape.short(e.result) or "")
            line = f"{e.index}  thread {e.thread}  {e.kind}  {e.name or ''}({e.args or ''}) -> {outcome}"
            if grep is not None and grep.lower() not in line.lower():
                continue
            if len(lines) >= limit:
                more = True
                break
            lines.append(line)
    text = "\n".join(lines) if lines else "(no events match)"
    if more:
        text += f"\n… more events match: narrow with start/end/thread/grep (limit {limit})"
    return mask(text)


def tool_diff(a: str, b: str) -> str:
    """The first boundary event where two recordings of the same program differ."""
    try:
        from retracesoftware.views import diff as full_diff   # the diff command, when installed
    except ImportError:
        full_diff = None
    if full_diff is not None:
        from retracesoftware.install.masking import mask
        return mask(full_diff.render(full_diff.compare(_path(a), _path(b))))
    from retracesoftware.views.summary import first_difference
    d = first_difference(_path(a), _path(b))
    if d is None:
        return "no difference: the same boundary calls with the same results on every thread"
    x, y = d["a"], d["b"]
    return (f"first difference: thread {d['thread']}, its boundary event #{d['nth']}\n"
            f"  {a}: event {x['index']}: {x['function']} -> {x['outcome']}\n"
            f"  {b}: event {y['index']}: {y['function']} -> {y['outcome']}")


def _stack_lines(stack) -> list:
    return [f"  {'*' if f.get('project') else ' '} {f['file']}:{f['line']} in {f['function']}" for f in stack]


def tool_stack_at(recording: str, event: int) -> str:
    """Replay to event `event` and show the program's Python stack there
    (outermost first; * marks the project's own frames)."""
    from retracesoftware.views.instrumented_run import stop_at_event
    result = stop_at_event(_path(recording), int(event))
    if result.get("error") and not result.get("stack"):
        return f"error: {result['error']}"
    return f"stack at event {event} (thread {result.get('thread')}):\n" + "\n".join(_stack_lines(result["stack"]))


def tool_eval_at(recording: str, event: int, expression: str) -> str:
    """Replay to event `event` and evaluate `expression` in the innermost
    project frame there (names of that frame's locals and globals). The
    evaluation runs outside the recording: calls it makes are real."""
    from retracesoftware.install.masking import mask
    from retracesoftware.views.instrumented_run import stop_at_event
    result = stop_at_event(_path(recording), int(event), expression)
    where = result.get("frame")
    at = f" in {where['function']} ({where['file']}:{where['line']})" if where else ""
    if "value" in result:
        return mask(f"{expression} = {result['value']}   [{result.get('type')}, at event {event}{at}]")
    return f"error at event {event}{at}: {result.get('error')}"


def tool_fork(recording: str, at: int, result: str | None = None, raise_: str | None = None) -> str:
    """Replay to event `at`, give the program `result` (JSON) or raise
    `raise_` (e.g. 'ConnectionResetError(104, "reset")') there instead of the
    recorded outcome, and continue live; returns what the program printed."""
    try:
        from retracesoftware.views import fork as fork_mod
    except ImportError:
        return ("error: fork is not available in this installation (it comes with the events/diff/fork "
                "commands); use `python -m retracesoftware fork` once installed")
    except Exception as exc:      # installed but broken on this Python (e.g. a SyntaxError)
        return f"error: fork is not available: views/fork.py cannot be imported ({type(exc).__name__}: {exc})"
    import subprocess
    import sys
    argv = [sys.executable, "-m", "retracesoftware", "fork", _path(recording), "--at", str(int(at))]
    if result is not None:
        argv += ["--result", result]
    if raise_ is not None:
        argv += ["--raise", raise_]
    del fork_mod
    path = _path(recording)
    cwd = _tape.preamble(path).get("cwd")
    cwd = cwd if isinstance(cwd, str) and os.path.isdir(cwd) else None   # where the program ran
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=600, cwd=cwd)
    out = proc.stdout.decode("utf-8", "replace")[-6000:]
    err = proc.stderr.decode("utf-8", "replace")[-3000:]
    return f"exit code {proc.returncode}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"


TOOLS = {
    "summary": tool_summary,
    "events": tool_events,
    "diff": tool_diff,
    "stack_at": tool_stack_at,
    "eval_at": tool_eval_at,
    "fork": tool_fork,
}


def _server_class():
    try:
        from mcp.server.mcpserver import MCPServer    # mcp 2.x
        return MCPServer
    except ImportError:
        pass
    from mcp.server.fastmcp import FastMCP            # mcp 1.x
    return FastMCP


def make_server():
    """The MCP server object (not started)."""
    Server = _server_class()
    server = Server("retracesoftware", instructions=INSTRUCTIONS)

    def wrap(fn):
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                return f"error: {exc}"
        guarded.__name__ = fn.__name__
        guarded.__doc__ = fn.__doc__
        guarded.__annotations__ = fn.__annotations__
        import inspect
        guarded.__signature__ = inspect.signature(fn)
        return guarded

    for name, fn in TOOLS.items():
        server.tool(name=name, description=(fn.__doc__ or "").strip())(wrap(fn))
    return server


def main(argv) -> int:
    p = _common.parser("mcp", "Serve recordings to AI agents over MCP on stdio (offline).")
    p.parse_args(argv)
    try:
        server = _server_class()
    except ImportError:
        raise _common.UsageError("the MCP server needs the mcp package — pip install 'retracesoftware[mcp]'") from None
    del server
    make_server().run("stdio")
    return 0
