"""``retracesoftware.open_recording(path)``: read a recording as typed events.

The documented Python API for looking inside a recording (docs/EVENTS.md,
"Reading a recording from Python"); the ``events``, ``diff`` and ``fork``
commands (retracesoftware/views/) and the views of the report are built on it.

    with retracesoftware.open_recording("run.bin") as rec:
        print(rec.preamble["argv"], [p.pid for p in rec.processes])
        for ev in rec.events():
            print(ev.index, ev.thread, ev.kind, ev.function, ev.args, ev.result_summary)

Reading never runs program code and never imports a module (classes of
recorded exceptions are looked up among modules already imported). Events
are produced one at a time from the stream: memory stays flat however long
the recording is.
"""
from __future__ import annotations

import os
import reprlib
from typing import Iterator

from retracesoftware.utils.errors import RecordingFormatError

__all__ = ["open_recording", "Recording", "Process", "Event", "Handle", "KINDS", "summarise_value"]

#: every Event.kind
KINDS = ("call", "result", "error", "callback", "callback_result", "callback_error",
         "sync", "sync_error", "new", "bind", "callback_def", "binding", "warning", "value")

_CALL, _RESULT, _ERROR, _STACK, _ARGS = "CALL", "RESULT", "ERROR", "STACK", "ARGS"
_NEW, _BIND, _CALLBACK_DEF = "NEW", "BIND", "CALLBACK_DEF"
_CALLBACK, _CALLBACK_RESULT, _CALLBACK_ERROR = "CALLBACK", "CALLBACK_RESULT", "CALLBACK_ERROR"
_SYNC, _SYNC_ERROR = "SYNC", "SYNC_ERROR"
_WARNING = "WARNING"
_BINDERS = {_NEW: "new", _BIND: "bind", _CALLBACK_DEF: "callback_def"}

_PLAIN = (type(None), bool, int, float, str, bytes)

_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlong = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


class Handle:
    """A bound object in a recording (a socket, a file's buffer, a callback,
    an external object): the recording holds its binding index and type."""

    __slots__ = ("index", "kind", "typename")

    def __init__(self, index: int, kind: str, typename: str | None):
        self.index = index
        self.kind = kind
        self.typename = typename

    def __repr__(self) -> str:
        return f"<{_clean(str(self.typename or '?'))} #{self.index}>"


def _clean(text: str) -> str:
    """*text* on one line with control characters escaped."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def summarise_value(value, limit: int | None = 80) -> str:
    """A short, escaped, one-line text for a recorded value (no program
    ``__repr__`` runs: only plain values, handles and exceptions)."""
    text = _summary(value)
    if limit is not None and len(text) > limit:
        text = text[:max(1, limit - 1)] + "…"
    return text


def _summary(value) -> str:
    t = type(value)
    if t in _PLAIN:
        return _repr.repr(value)
    if t is Handle:
        return repr(value)
    if isinstance(value, BaseException):
        return f"{_clean(type(value).__name__)}({', '.join(_summary(a) for a in value.args)})"
    if t in (tuple, list, set, frozenset, dict):
        try:
            return _clean(_Repr().repr(value))
        except Exception:
            pass
    if isinstance(value, tuple):       # structseq, namedtuple
        return f"{_clean(t.__name__)}{_summary(tuple(value))}"
    for base in (int, float, str, bytes):
        if isinstance(value, base):    # enums, decimal-likes recorded by value
            try:
                return _clean(f"{t.__name__}({_repr.repr(base(value))})")
            except Exception:
                break
    return f"<{_clean(t.__qualname__)}>"


class _Repr(reprlib.Repr):
    def __init__(self):
        super().__init__()
        self.maxstring = 200
        self.maxother = 200
        self.maxlong = 60
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 8
        self.maxlevel = 3

    def repr1(self, x, level):
        t = type(x)
        if t in _PLAIN or t in (tuple, list, set, frozenset, dict):
            return super().repr1(x, level)
        return _summary(x)


class Event:
    """One event of a recording, in replay (tape) order.

    ``index``: the tape's event index of its first item (the numbering of
    divergence reports and of ``fork --at``); ``pid``: the process;
    ``thread``: the logical thread (0 is the main thread); ``kind``: one of
    `KINDS`; ``function``: the boundary function (``"posix.open"``), the
    callback's or the bound type's name; ``args``: the recorded argument
    summary (a str, or None when the function has no summariser);
    ``fingerprint``: the arguments' fingerprint; ``result`` / ``error``: the
    recorded outcome (an ``error`` is an exception object); ``outcome``:
    "result", "error" or None (a call whose outcome comes later, as its own
    "result"/"error" event, because other threads' events or callbacks came
    in between); ``stack``: recorded frames (``--stacks``) or None;
    ``call_index``: for a "result"/"error" event, the index of its call.
    """

    __slots__ = ("index", "pid", "thread", "kind", "function", "args", "fingerprint",
                 "result", "error", "outcome", "stack", "call_index")

    def __init__(self, index, pid, thread, kind, function=None, args=None, fingerprint=None,
                 result=None, error=None, outcome=None, stack=None, call_index=None):
        self.index = index
        self.pid = pid
        self.thread = thread
        self.kind = kind
        self.function = function
        self.args = args
        self.fingerprint = fingerprint
        self.result = result
        self.error = error
        self.outcome = outcome
        self.stack = stack
        self.call_index = call_index

    @property
    def result_summary(self) -> str | None:
        """The outcome as short one-line text (``raise Exc(...)`` for errors)."""
        if self.outcome == "error" or self.kind in ("error", "sync_error", "callback_error"):
            return "raise " + summarise_value(self.error)
        if self.outcome == "result" or self.kind in ("result", "sync", "value", "warning"):
            return summarise_value(self.result)
        return None

    @property
    def call_text(self) -> str:
        """``function(args)``: the summary when recorded, ``…`` when the call
        had arguments that were not summarised."""
        name = _clean(str(self.function)) if self.function is not None else "?"
        if self.kind == "warning" and self.args is not None:
            return f"{name} at {_clean(str(self.args))}"
        if self.kind not in ("call", "callback"):
            return name
        if self.args is not None:
            return f"{name}({_clean(str(self.args))})"
        return f"{name}()" if self.fingerprint == _no_args_fingerprint() else f"{name}(…)"

    def to_dict(self) -> dict:
        """JSON-ready: summaries as text, never the raw values."""
        return {
            "index": self.index, "pid": self.pid, "thread": _jsonable(self.thread),
            "kind": self.kind, "function": self.function, "args": self.args,
            "result": self.result_summary, "outcome": self.outcome,
            "call_index": self.call_index,
            "stack": [list(f) for f in self.stack] if self.stack else None,
        }

    def line(self, width: int = 80) -> str:
        """The ``events`` command's line for this event."""
        where = f"{self.pid}/{self.thread if self.thread is not None else 0}"
        text = self.call_text
        if self.kind in ("result", "error") and self.call_index is not None:
            text = f"{text} [call {self.call_index}]"
        out = self.result_summary
        if out is not None:
            if len(out) > width:
                out = out[:width - 1] + "…"
            text += f" -> {out}" if not out.startswith("raise ") else f" !! {out}"
        elif self.kind == "call":
            text += " …"
        return f"{self.index:>8}  {where:<10} {self.kind:<15} {text}"

    def __repr__(self) -> str:
        return f"<Event {self.line()}>"


def _jsonable(v):
    return v if isinstance(v, (type(None), bool, int, float, str)) else repr(v)


_FP = []


def _no_args_fingerprint():
    if not _FP:
        from retracesoftware.utils import fingerprint
        _FP.append(fingerprint())
    return _FP[0]


class Process:
    """A child process recorded with the run (docs/CHILDREN.md)."""

    __slots__ = ("pid", "parent_pid", "kind", "path", "depth")

    def __init__(self, pid, parent_pid, kind, path, depth):
        self.pid, self.parent_pid, self.kind, self.path, self.depth = pid, parent_pid, kind, path, depth

    def open(self) -> "Recording":
        return open_recording(self.path)

    def __repr__(self) -> str:
        return f"<Process pid={self.pid} {self.kind} of {self.parent_pid} {self.path}>"


class Recording:
    """An opened recording: ``preamble`` (dict), ``pid``, ``argv``,
    ``target``, ``processes`` (child recordings), ``events()``."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        from retracesoftware.install.recording_streams import open_recording as _open
        reader = _open(path)
        try:
            pre = reader.preamble
        finally:
            reader.close()
        if not isinstance(pre, dict):
            raise RecordingFormatError(f"{path} has no retrace preamble — not a recording made by retracesoftware")
        self.preamble: dict = pre
        self._processes = None

    @property
    def pid(self):
        return self.preamble.get("pid")

    @property
    def argv(self):
        return self.preamble.get("argv")

    @property
    def target(self):
        return self.preamble.get("target")

    @property
    def processes(self) -> list[Process]:
        """Child recordings of this run, depth first (forks and subprocesses)."""
        if self._processes is None:
            from retracesoftware.children import processes
            self._processes = [Process(p["pid"], p["parent_pid"], p["kind"], p["path"], p["depth"])
                               for p in processes(self.path)]
        return self._processes

    def process(self, pid: int) -> "Recording":
        """The recording of process *pid* (this one or a child)."""
        if pid == self.pid:
            return self
        for proc in self.processes:
            if proc.pid == pid:
                return proc.open()
        raise RecordingFormatError(f"no process {pid} in recording {self.path} — "
                                   f"see python -m retracesoftware inspect {self.path}")

    def summary(self) -> dict:
        """What ``inspect --json`` prints (counts, exit code, threads...)."""
        from retracesoftware.inspect_cmd import summarise
        return summarise(self.path)

    def events(self, *, start: int | None = None, stop: int | None = None) -> Iterator[Event]:
        """Every event in tape (replay) order, streamed. *start*/*stop*
        bound the event index (``start <= index < stop``; reading stops at
        *stop*). A damaged or cut recording raises `RecordingFormatError`
        after its last readable event."""
        return _parse(self.path, self.pid, start, stop)

    __iter__ = events

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_recording(path, pid: int | None = None) -> Recording:
    """Open the recording at *path* (the process *pid* of it when given)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RecordingFormatError(f"recording {path} does not exist — check the path")
    rec = Recording(path)
    return rec if pid is None else rec.process(pid)


_END = object()


def _parse(path, pid, start, stop):
    from retracesoftware.install.recording_streams import open_recording as _open
    reader = _open(path)
    try:
        yield from _walk(reader, pid, start, stop)
    except EOFError:
        return
    finally:
        reader.close()


def _walk(reader, pid, start, stop):
    read = reader.read
    bind = reader.bind
    nbind = [0]
    pending: dict = {}      # thread -> [call events waiting for their outcome]
    pushed = []             # one item of look-ahead: (index, thread, value)

    def bind_next(kind, name):
        h = Handle(nbind[0], kind, name)
        nbind[0] += 1
        bind(h)
        return h

    def take():
        """(index, thread, value) of the next item; bindings bound to a
        Handle of unknown type (a stray marker: returned as _BINDING)."""
        if pushed:
            return pushed.pop()
        kind = reader.next_kind
        if kind is None:
            return None
        thread = reader.thread          # (peeking consumes a THREAD_SWITCH: index after it)
        index = reader.events
        if kind == "binding":
            return index, thread, bind_next("binding", None)
        return index, thread, read()

    def operand(kind, name):
        if reader.next_kind == "binding":
            return bind_next(kind, name)
        return None

    while True:
        item = take()
        if item is None:
            return
        index, thread, tag = item
        if stop is not None and index >= stop:
            return
        skip = start is not None and index < start
        if type(tag) is Handle:
            ev = Event(index, pid, thread, "binding", function=tag.typename)
        elif tag == _CALL:
            name = read()
            fp = read()
            ev = Event(index, pid, thread, "call", function=name, fingerprint=fp)
            while True:
                nxt = take()
                if nxt is None:
                    break
                if nxt[1] != thread or type(nxt[2]) is not str:
                    pushed.append(nxt)
                    break
                t = nxt[2]
                if t == _ARGS:
                    ev.args = read()
                elif t == _STACK:
                    ev.stack = read()
                elif t == _NEW:
                    operand("new", read())
                elif t == _RESULT:
                    ev.result = read()
                    ev.outcome = "result"
                    break
                elif t == _ERROR:
                    ev.error = read()
                    ev.outcome = "error"
                    break
                else:
                    pushed.append(nxt)
                    break
            if ev.outcome is None:
                pending.setdefault(thread, []).append(ev)
        elif tag == _RESULT or tag == _ERROR:
            value = read()
            waiting = pending.get(thread)
            call = waiting.pop() if waiting else None
            ev = Event(index, pid, thread, "result" if tag == _RESULT else "error",
                       function=call.function if call else None,
                       args=call.args if call else None,
                       fingerprint=call.fingerprint if call else None,
                       call_index=call.index if call else None)
            if tag == _RESULT:
                ev.result = value
            else:
                ev.error = value
        elif tag == _SYNC:
            ev = Event(index, pid, thread, "sync", function="sync", result=read())
        elif tag == _SYNC_ERROR:
            ev = Event(index, pid, thread, "sync_error", function="sync", error=read())
        elif tag in _BINDERS:
            kind = _BINDERS[tag]
            name = read()
            operand(kind, name)
            ev = Event(index, pid, thread, kind, function=name)
        elif tag == _CALLBACK:
            cb = read()
            cargs = read()
            ckwargs = read()
            name = cb.typename if type(cb) is Handle else summarise_value(cb)
            parts = [summarise_value(a, 60) for a in (cargs if isinstance(cargs, tuple) else (cargs,))]
            if isinstance(ckwargs, dict):
                parts += [f"{k}={summarise_value(v, 60)}" for k, v in ckwargs.items()]
            ev = Event(index, pid, thread, "callback", function=name, args=", ".join(parts))
        elif tag == _CALLBACK_RESULT:
            ev = Event(index, pid, thread, "callback_result", function="callback")
        elif tag == _CALLBACK_ERROR:
            ev = Event(index, pid, thread, "callback_error", function="callback", error=read())
        elif tag == _WARNING:
            # category message filename lineno module; shown like a callback
            category, text, filename, lineno, _module = read(), read(), read(), read(), read()
            where = f"{os.path.basename(filename) if isinstance(filename, str) else '?'}:{lineno}"
            ev = Event(index, pid, thread, "warning", function=category,
                       args=where, result=text)
        elif tag == _STACK or tag == _ARGS:
            read()
            continue
        else:
            ev = Event(index, pid, thread, "value", result=tag)
        if not skip:
            yield ev
