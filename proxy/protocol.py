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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable  # noqa: F401

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
WARNING = "WARNING"              # WARNING category message      a warning shown inside a call

TAGS = frozenset({CALL, STACK, ARGS, INIT, NEW, RESULT, ERROR, BIND, CALLBACK_DEF,
                  CALLBACK, CALLBACK_RESULT, CALLBACK_ERROR, WARNING})


def _define_protocols() -> None:
    """`Writer` and `Reader`, made on first use (module ``__getattr__``): the
    runtime reads only the tags and helpers here, and importing typing is
    2.5 ms of every start-up."""
    global Writer, Reader, ThreadId
    from typing import Any, Callable, Protocol, runtime_checkable

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
        """Where a replay reads from (StreamReader, MemoryReader): exactly what
        the engine uses, nothing probed.

        ``read()`` returns the next value (``THREAD_SWITCH``/``BINDING_DELETE``
        handled transparently; ``EOFError`` at the clean end; a handle decodes to
        the object given to ``bind``). ``bind(obj)`` consumes the ``NEW_BINDING`` at
        the head. ``thread`` is the logical thread id of the next value, without
        consuming it (None before any thread switch). ``next_kind`` is "value",
        "binding" or None at the end. ``events`` is the index of the next event
        (an int). ``take_call(thread, call_tag, name, fp, result_tag, error_tag)``
        is the fast path of a replayed call: when the next events are ``call_tag
        name fp`` then ``result_tag value`` or ``error_tag exc``, all of logical
        thread *thread* with nothing in between, it consumes those five and
        returns ``(ok, value, same_thread)`` (ok: it was ``result_tag``;
        same_thread: the event after them is *thread*'s too); anything else
        consumes nothing and returns None (the engine then reads event by event,
        and reports what it finds). It never raises for the tape's contents.
        ``take_event(thread, tag, accept)`` is the same for a two-value event
        (``SYNC value``): consumed, ``(value, same_thread)`` returned, when it is
        *thread*'s next event and ``accept(value)`` (run before anything is
        consumed) is true; else None.
        """

        def read(self) -> Any: ...
        def bind(self, obj: Any) -> None: ...
        def take_call(self, thread: Any, call_tag: str, name: str, fp: int,
                      result_tag: str, error_tag: str) -> tuple | None: ...
        def take_event(self, thread: Any, tag: str, accept: Callable[[Any], bool]) -> tuple | None: ...

        @property
        def thread(self) -> Any: ...

        @property
        def next_kind(self) -> str | None: ...

        @property
        def events(self) -> int: ...

    ThreadId = Callable[[], Any]


def __getattr__(name: str):
    if name in ("Writer", "Reader", "ThreadId"):
        _define_protocols()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def at_end(reader: Reader) -> bool:
    """True when *reader*'s tape is used up."""
    return reader.next_kind is None


def event_index(reader: Reader) -> int:
    """The event index of the next event of *reader*."""
    return reader.events


def is_structseq(obj) -> bool:
    """A struct sequence (``os.stat_result``, ``time.struct_time``…): a tape
    value written by value, like a tuple, by every writer."""
    t = type(obj)
    return isinstance(obj, tuple) and hasattr(t, "n_sequence_fields") and hasattr(t, "n_fields")
