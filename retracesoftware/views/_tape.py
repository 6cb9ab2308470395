"""Boundary events of a recording, streamed, for the views.

The views read a recording as a sequence of typed events (one per boundary
call, callback, sync point, binding...) in tape order. This module walks the
tape grammar (docs/EVENTS.md) with the stream reader — no replay, no program
code, flat memory — and, when the public events API
(``retracesoftware.open_recording``, docs/EVENTS.md) is installed, takes the
argument summaries it recorded from there.

Event index: the position of the event's first item among values and
NEW_BINDING markers (thread switches and binding deletes not counted), the
index divergence reports and ``events`` use.
"""
from __future__ import annotations

import os

from retracesoftware.utils.errors import RecordingFormatError

OUTCOME_TAGS = ("RESULT", "ERROR")
BINDING_TAGS = {"NEW": 1, "BIND": 1, "CALLBACK_DEF": 1, "INIT": 0}


class Event:
    """One boundary event. ``kind``: call, callback, sync, new, bind,
    callback_def, value. ``time_ns``: replay time when an instrumented
    replay supplied it, else None."""

    __slots__ = ("index", "thread", "kind", "name", "args", "result", "error", "stack", "depth",
                 "time_ns", "end_index", "where")

    def __init__(self, index, thread, kind, name=None, args=None, result=None, error=None, stack=None,
                 depth=0):
        self.index = index
        self.thread = thread
        self.kind = kind
        self.name = name
        self.args = args
        self.result = result
        self.error = error
        self.stack = stack
        self.depth = depth
        self.time_ns = None
        self.end_index = index
        self.where = None

    def to_dict(self) -> dict:
        return {"index": self.index, "thread": self.thread, "kind": self.kind, "name": self.name,
                "args": self.args, "result": short(self.result), "error": short(self.error),
                "depth": self.depth}

    def __repr__(self):
        return f"Event({self.index}, thread={self.thread!r}, {self.kind}, {self.name!r})"


class _Placeholder:
    __slots__ = ("__weakref__",)


def short(value, limit=120) -> str | None:
    """A bounded, printable text for a recorded value (never its repr at
    full length; control characters escaped)."""
    if value is None:
        return None
    if isinstance(value, BaseException):
        text = f"{type(value).__name__}{value.args!r}"
    elif isinstance(value, _Placeholder):
        text = "<object>"
    else:
        try:
            text = repr(value)
        except Exception:
            text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class _ThreadState:
    __slots__ = ("pending", "calls", "callbacks")

    def __init__(self):
        self.pending = None     # (what, event, remaining) while a tag's operands are being read
        self.calls = []         # open CALL events (waiting for RESULT/ERROR)
        self.callbacks = []     # open CALLBACK events


def preamble(path) -> dict:
    from retracesoftware.install.session import open_recording
    reader = open_recording(path)
    try:
        pre = reader.preamble
    finally:
        reader.close()
    if not isinstance(pre, dict):
        raise RecordingFormatError(f"{path} has no retrace preamble — not a recording made by retracesoftware")
    return pre


def walk(path, *, times=None, where=None, on_progress=None):
    """Yield `Event`s of *path* in tape order of their completion (a call is
    yielded at its outcome; its ``index`` is where it started).

    *times*: an iterator of replay times (ns), one per value/NEW_BINDING
    (`InstrumentedRun.read_times`). A damaged or torn end stops the walk
    after every event before it; `walk.damage` tells why."""
    from retracesoftware.install.session import open_recording
    if not os.path.exists(path):
        raise RecordingFormatError(f"recording {path} does not exist — check the path")
    reader = open_recording(path)
    states: dict = {}
    index = -1
    total = os.path.getsize(path)
    step = 0
    time_of = iter(times) if times is not None else None
    where_of = iter(where) if where is not None else None
    now = None
    here = None
    try:
        while True:
            try:
                kind = reader.next_kind
                if kind is None:
                    break
                thread = reader.thread
                if kind == "binding":
                    reader.bind(_Placeholder())
                    value = _BINDING
                else:
                    value = reader.read()
            except EOFError:
                break
            except RecordingFormatError as exc:
                walk.damage = str(exc)
                break
            index += 1
            if time_of is not None:
                now = next(time_of, None)
            if where_of is not None:
                here = next(where_of, None)
            step += 1
            if on_progress is not None and step >= 4096:
                step = 0
                offset = getattr(reader.position, "offset", None)
                if offset is not None:
                    on_progress(offset, total)
            state = states.get(thread)
            if state is None:
                state = states[thread] = _ThreadState()
            yield from _step(state, thread, index, value, now, here)
    finally:
        reader.close()
    # Calls still open at the end (the program was killed mid-call).
    for thread, state in states.items():
        while state.calls:
            event = state.calls.pop()
            event.error = "(no outcome: the recording ends during this call)"
            yield event


walk.damage = None
_BINDING = object()


def _step(state, thread, index, value, now, here=None):
    pending = state.pending
    if pending is not None:
        what, event, remaining = pending
        if what == "call":
            if remaining == 2:
                event.name = value if isinstance(value, str) else short(value)
                state.pending = ("call", event, 1)
            else:
                event.args = None    # the fingerprint: not shown
                state.pending = None
                state.calls.append(event)
            return
        if what == "stack":
            if state.calls and isinstance(value, (tuple, list)):
                state.calls[-1].stack = value
            state.pending = None
            return
        if what in ("RESULT", "ERROR"):
            state.pending = None
            if state.calls:
                call = state.calls.pop()
                if what == "RESULT":
                    call.result = value
                else:
                    call.error = value
                call.end_index = index
                yield call
            return
        if what in BINDING_TAGS:
            if remaining and value is not _BINDING:
                event.name = value if isinstance(value, str) else short(value)
                state.pending = (what, event, 0)
                return
            state.pending = None
            yield event
            return
        if what == "CALLBACK":
            if remaining == 3:
                event.name = getattr(value, "name", None) or "callback"
            elif remaining == 2:
                event.args = short(value)
            if remaining > 1:
                state.pending = ("CALLBACK", event, remaining - 1)
                return
            state.pending = None
            state.callbacks.append(event)
            yield event
            return
        if what in ("SYNC", "SYNC_ERROR"):
            state.pending = None
            if what == "SYNC":
                event.result = value
                # a lock acquire records the lock's id (an int), other sync points a bool
                if isinstance(value, int) and not isinstance(value, bool):
                    event.name = "lock acquire"
            else:
                event.error = value
            yield event
            return
        if what == "CALLBACK_ERROR":
            state.pending = None
            if state.callbacks:
                state.callbacks.pop().error = value
            return
    if value is _BINDING:
        return
    depth = len(state.calls) + len(state.callbacks)
    if value == "CALL":
        event = Event(index, thread, "call", depth=depth)
        event.time_ns = now
        event.where = here
        state.pending = ("call", event, 2)
    elif value == "STACK":
        state.pending = ("stack", None, 1)
    elif value in OUTCOME_TAGS:
        state.pending = (value, None, 1)
    elif value in BINDING_TAGS:
        event = Event(index, thread, value.lower(), depth=depth)
        event.time_ns = now
        event.where = here
        state.pending = (value, event, BINDING_TAGS[value])
    elif value == "CALLBACK":
        event = Event(index, thread, "callback", depth=depth)
        event.time_ns = now
        event.where = here
        state.pending = ("CALLBACK", event, 3)
    elif value == "CALLBACK_RESULT":
        if state.callbacks:
            state.callbacks.pop()
    elif value == "CALLBACK_ERROR":
        state.pending = ("CALLBACK_ERROR", None, 1)
    elif value in ("SYNC", "SYNC_ERROR"):
        event = Event(index, thread, "sync", name="sync point", depth=depth)
        event.time_ns = now
        event.where = here
        state.pending = (value, event, 1)
    else:
        event = Event(index, thread, "value", result=value, depth=depth)
        event.time_ns = now
        event.where = here
        yield event
