"""The tape the engine writes and reads, as abstract protocols.

`proxy` never imports `stream`: it talks to these two protocols, which are the
subset of `StreamWriter` / `StreamReader` (docs/ARCHITECTURE.md) the engine
uses. `MemoryWriter` / `MemoryReader` (memory.py) implement them in memory for
tests; `install` hands the engine the real stream objects.

The event tags below are the vocabulary of the tape grammar (docs/EVENTS.md).
They are short strings: the stream interns repeated short strings, and a
recording stays readable with a stock msgpack reader.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

# ----------------------------------------------------------------- event tags
# Changing one of these changes the recording format (docs/EVENTS.md).
CALL = "CALL"                    # CALL name fingerprint          an int->ext call
STACK = "STACK"                  # STACK frames                   optional, after CALL
ARGS = "ARGS"                    # ARGS summary                   optional, after CALL (configs [summaries])
INIT = "INIT"                    # INIT <NEW_BINDING>             constructor binds self
NEW = "NEW"                      # NEW typename <NEW_BINDING>     object first seen in a result
RESULT = "RESULT"                # RESULT value                   the call returned
ERROR = "ERROR"                  # ERROR exception                the call raised
BIND = "BIND"                    # BIND typename <NEW_BINDING>    System.bind(obj)
CALLBACK_DEF = "CALLBACK_DEF"    # CALLBACK_DEF name <NEW_BINDING> System.callback(fn)
CALLBACK = "CALLBACK"            # CALLBACK callback args kwargs  ext->int call starts
CALLBACK_RESULT = "CALLBACK_RESULT"  # the callback returned
CALLBACK_ERROR = "CALLBACK_ERROR"    # CALLBACK_ERROR exception: the callback raised

TAGS = frozenset({CALL, STACK, ARGS, INIT, NEW, RESULT, ERROR, BIND, CALLBACK_DEF,
                  CALLBACK, CALLBACK_RESULT, CALLBACK_ERROR})


@runtime_checkable
class Writer(Protocol):
    """Where a recording goes (StreamWriter, MemoryWriter).

    ``write(*values)`` appends each value as one event, in order, and the
    values of one call are contiguous on the tape even when several threads
    write (the writer emits ``THREAD_SWITCH`` itself before them when the
    writing thread changed). ``bind(obj)`` emits ``NEW_BINDING``: later writes
    of ``obj`` (also nested in containers) encode a handle. ``unbind(obj)``
    emits ``BINDING_DELETE``.
    """

    def write(self, *values: Any) -> None: ...
    def bind(self, obj: Any) -> None: ...
    def unbind(self, obj: Any) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class Reader(Protocol):
    """Where a replay reads from (StreamReader, MemoryReader).

    ``read()`` returns the next value (``THREAD_SWITCH``/``BINDING_DELETE``
    handled transparently; ``EOFError`` at the clean end; a handle decodes to
    the object given to ``bind``). ``bind(obj)`` consumes the ``NEW_BINDING`` at
    the head. ``thread`` is the logical thread id of the next value, without
    consuming it (None before any thread switch). ``next_kind`` is "value",
    "binding" or None at the end (optional: without it the end is found by
    ``read()`` raising ``EOFError``). ``position`` identifies the next event:
    an int event index, an object with an int ``.event``, or a tuple whose
    last item is the event index.
    """

    def read(self) -> Any: ...
    def bind(self, obj: Any) -> None: ...

    @property
    def thread(self) -> Any: ...

    @property
    def position(self) -> Any: ...


ThreadId = Callable[[], Any]


def at_end(reader: Any) -> bool:
    """True when *reader* says its tape is used up (``next_kind is None``)."""
    kind = getattr(reader, "next_kind", "value")
    return kind is None


def event_index(reader: Any) -> int | None:
    """The event index of the next event of *reader* (see `Reader.position`)."""
    # The stream readers keep it as a plain int (`events`): no position tuple
    # to build on every read of a replay.
    events = getattr(reader, "events", None)
    if type(events) is int:
        return events
    pos = getattr(reader, "position", None)
    event = getattr(pos, "event", None)          # stream's StreamPosition
    if isinstance(event, int):
        return event
    if isinstance(pos, tuple):
        pos = pos[-1] if pos else None
    return pos if isinstance(pos, int) else None
