"""Boundary events of a recording, streamed, for the views.

The views read a recording through the public events API
(``retracesoftware.open_recording``, docs/EVENTS.md) — no replay, no program
code, flat memory — as one `Event` per boundary call (with its outcome and
argument summary), callback, sync point or binding, joined with what an
instrumented replay saw at each (replay time, the project frame that made
it). Event indices are the API's, the numbering of ``events``, ``fork
--at`` and divergence reports.
"""
from __future__ import annotations


from retracesoftware.utils.errors import RecordingFormatError



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


def short(value, limit=120) -> str | None:
    """A bounded, printable text for a recorded value (never its repr at
    full length; control characters escaped)."""
    if value is None:
        return None
    if isinstance(value, BaseException):
        text = f"{type(value).__name__}{value.args!r}"
    else:
        try:
            text = repr(value)
        except Exception:
            text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def preamble(path) -> dict:
    from retracesoftware.recording import open_recording
    return dict(open_recording(path).preamble)


def walk(path, *, reads=None):
    """Yield `Event`s of *path* (the public API's events, docs/EVENTS.md,
    with a call and its outcome as one event, yielded at its outcome; its
    ``index`` is the call's).

    *reads*: ``(event index, replay ns, code slot)`` of every event an
    instrumented replay consumed (`InstrumentedRun.reads`), in tape order:
    each event gets ``time_ns`` and ``where`` (the code slot of the project
    frame that made it) from the read of its index. A damaged or torn end
    stops the walk after every event before it; ``walk.damage`` says why."""
    from retracesoftware.recording import open_recording
    walk.damage = None
    rec = open_recording(path)
    reads = iter(reads) if reads is not None else None
    current = [-1, None, None]          # the last read taken from *reads*

    def stamp(event):
        if reads is None:
            return event
        while current[0] < event.index:
            nxt = next(reads, None)
            if nxt is None:
                current[:] = [1 << 62, None, None]
                break
            current[:] = nxt
        if current[0] == event.index:
            event.time_ns = current[1]
            event.where = current[2]
        return event

    pending = {}
    events = rec.events()
    while True:
        try:
            ev = next(events)
        except StopIteration:
            break
        except RecordingFormatError as exc:
            walk.damage = str(exc)
            break
        kind = ev.kind
        if kind == "call":
            e = stamp(Event(ev.index, ev.thread, "call", name=ev.function, args=ev.args, stack=ev.stack))
            if ev.outcome is None:
                pending[ev.index] = e
                continue
            e.result, e.error = ev.result, ev.error
            yield e
        elif kind in ("result", "error"):
            e = pending.pop(ev.call_index, None)
            if e is None:
                continue
            e.result, e.error = ev.result, ev.error
            e.end_index = ev.index
            yield e
        elif kind in ("sync", "sync_error"):
            name = ("lock acquire" if isinstance(ev.result, int) and not isinstance(ev.result, bool)
                    else "sync point")
            yield stamp(Event(ev.index, ev.thread, "sync", name=name, result=ev.result, error=ev.error))
        elif kind == "callback":
            yield stamp(Event(ev.index, ev.thread, "callback", name=ev.function, args=ev.args))
        elif kind == "callback_error":
            yield stamp(Event(ev.index, ev.thread, "callback_error", name="callback", error=ev.error))
        elif kind in ("new", "bind", "callback_def"):
            yield stamp(Event(ev.index, ev.thread, kind, name=ev.function))
        elif kind == "value":
            yield stamp(Event(ev.index, ev.thread, "value", result=ev.result))
    # Calls still open at the end (the program was killed mid-call).
    for e in pending.values():
        e.error = "(no outcome: the recording ends during this call)"
        yield e


walk.damage = None
