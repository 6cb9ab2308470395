"""In-memory `Writer`/`Reader`: the tape as a Python list, for tests.

Same semantics as the file stream (docs/ARCHITECTURE.md §stream), minus bytes:

* ``write(*values)`` appends one *value* entry per value, contiguous even with
  several writing threads, preceded by a ``switch`` entry when the logical
  thread (``thread_id()``) differs from the last writer's (and before the
  first write).
* Values are copied at write time (a later mutation of a list the program
  got back does not change the tape) and restricted to what the stream can
  carry: None/bool/int/float/str/bytes (subclasses are stored as the base
  type), tuple/list/dict/set/frozenset, exceptions (type + args; args the
  tape cannot carry are stored as their repr), structseqs (``os.stat_result``),
  and bound objects (as handles). Anything else is a ``TypeError``, so a test
  catches what the real stream would refuse.
* ``bind(obj)`` appends a ``bind`` entry; the reader's ``bind(obj)`` consumes
  it and later handles decode to *that* object. ``unbind`` appends ``unbind``,
  which the reader applies transparently. Errors match the stream's: reading
  a value at a binding (or binding at a value) is a ValueError, binding a
  scalar a TypeError, binding twice a ValueError, unbinding an unbound
  object a KeyError.
* The event index counts value and bind entries (not thread switches or
  unbinds).
"""
from __future__ import annotations

import _thread

from retracesoftware.proxy.protocol import is_structseq  # noqa: F401  (also imported from here)
from retracesoftware.utils.errors import RecordingFormatError

_SCALARS = (type(None), bool, int, float, str, bytes)
_BASES = (bool, int, float, str, bytes)

VALUE, SWITCH, BIND, UNBIND = "value", "switch", "bind", "unbind"


class Handle:
    """A reference to the n-th binding of a tape (what the stream encodes)."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __eq__(self, other):
        return type(other) is Handle and other.index == self.index

    def __hash__(self):
        return hash(("Handle", self.index))

    def __repr__(self):
        return f"Handle({self.index})"


class EncodedException:
    __slots__ = ("type", "args")

    def __init__(self, type_, args):
        self.type = type_
        self.args = args

    def __repr__(self):
        return f"{self.type.__name__}{self.args!r}"


class EncodedStructSeq:
    __slots__ = ("type", "fields", "extra")

    def __init__(self, type_, fields, extra):
        self.type = type_
        self.fields = fields
        self.extra = extra

    def __repr__(self):
        return f"{self.type.__name__}{self.fields!r}"


class MemoryWriter:
    """A `Writer` that keeps the tape in ``self.tape`` (a list of entries)."""

    def __init__(self, *, thread_id=None):
        self.tape: list = []
        self._thread_id = thread_id
        self._last_thread = _NOTHING
        self._handles: dict[int, tuple[int, object]] = {}   # id(obj) -> (index, obj)
        self._next_handle = 0
        # Re-entrant: a weakref callback (a bound object dying during a
        # garbage collection triggered inside write) may call unbind.
        self._lock = _thread.RLock()
        self.closed = False
        self.events = 0

    # -- encoding --------------------------------------------------------
    def _encode(self, v, depth=0):
        t = type(v)
        if t in _SCALARS:
            return v
        bound = self._handles.get(id(v))
        if bound is not None:
            return Handle(bound[0])
        if depth > 100:
            raise TypeError("MemoryWriter: value nested too deeply")
        if t is tuple or t is list:
            return t(self._encode(x, depth + 1) for x in v)
        if t is dict:
            return {self._encode(k, depth + 1): self._encode(x, depth + 1) for k, x in v.items()}
        if t is set or t is frozenset:
            return t(self._encode(x, depth + 1) for x in v)
        if isinstance(v, BaseException):
            try:
                args = self._encode(tuple(v.args), depth + 1)
            except TypeError:
                args = tuple(repr(a) for a in v.args)
            return EncodedException(t, args)
        if is_structseq(v):
            _, (fields, extra) = v.__reduce__()[:2]
            return EncodedStructSeq(t, self._encode(tuple(fields), depth + 1),
                                    self._encode(dict(extra), depth + 1))
        for base in _BASES:
            if isinstance(v, base):
                return base(v)
        raise TypeError(
            f"MemoryWriter cannot encode a {t.__module__}.{t.__qualname__} "
            f"(bind it first, or make its type a patched type)")

    # -- Writer protocol -------------------------------------------------
    def _switch(self):
        if self._thread_id is not None:
            tid = self._thread_id()
            if tid != self._last_thread:
                self._last_thread = tid
                self.tape.append((SWITCH, tid))

    def write(self, *values):
        with self._lock:
            self._check_open()
            encoded = [(VALUE, self._encode(v)) for v in values]
            self._switch()
            self.tape.extend(encoded)
            self.events += len(encoded)

    def bind(self, obj):
        with self._lock:
            self._check_open()
            if type(obj) in _SCALARS:
                raise TypeError(f"MemoryWriter: cannot bind a {type(obj).__name__} value")
            if id(obj) in self._handles:
                raise ValueError(f"MemoryWriter: {type(obj).__name__} object is already bound")
            index = self._next_handle
            self._next_handle += 1
            self._handles[id(obj)] = (index, obj)
            self._switch()
            self.tape.append((BIND, index))
            self.events += 1

    def unbind(self, obj):
        with self._lock:
            self._check_open()
            entry = self._handles.pop(id(obj), None)
            if entry is None:
                raise KeyError(f"MemoryWriter: {type(obj).__name__} object is not bound")
            self.tape.append((UNBIND, entry[0]))

    def flush(self):
        pass

    def close(self):
        self.closed = True

    def _check_open(self):
        if self.closed:
            raise ValueError("MemoryWriter is closed")

    def reader(self) -> "MemoryReader":
        return MemoryReader(self.tape)


class _Nothing:
    def __repr__(self):
        return "<nothing>"


_NOTHING = _Nothing()


class MemoryReader:
    """A `Reader` over a tape made by `MemoryWriter` (``writer.tape``)."""

    def __init__(self, tape):
        if isinstance(tape, MemoryWriter):
            tape = tape.tape
        self._tape = list(tape)
        self._pos = 0                 # index into _tape
        self._events = 0              # event index of the next value/bind
        self._thread = None
        self._bindings: dict[int, object] = {}
        # take_call/take_event run without the sequencer's lock: one
        # thread at a time in the tape (the stream readers are atomic).
        self._mutex = _thread.RLock()

    # -- helpers ---------------------------------------------------------
    def _skip(self):
        """Apply thread switches and unbinds at the head."""
        tape = self._tape
        while self._pos < len(tape):
            kind, payload = tape[self._pos]
            if kind == SWITCH:
                self._thread = payload
            elif kind == UNBIND:
                self._bindings.pop(payload, None)
            else:
                return tape[self._pos]
            self._pos += 1
        return None

    def _decode(self, v):
        t = type(v)
        if t in _SCALARS:
            return v
        if t is Handle:
            try:
                return self._bindings[v.index]
            except KeyError:
                raise RecordingFormatError(
                    f"handle {v.index} at event {self._events} refers to no live binding") from None
        if t is tuple or t is list:
            return t(self._decode(x) for x in v)
        if t is dict:
            return {self._decode(k): self._decode(x) for k, x in v.items()}
        if t is set or t is frozenset:
            return t(self._decode(x) for x in v)
        if t is EncodedException:
            args = self._decode(v.args)
            try:
                exc = v.type(*args)
            except Exception:
                exc = v.type.__new__(v.type)
                exc.args = args
            return exc
        if t is EncodedStructSeq:
            return v.type(self._decode(v.fields), self._decode(v.extra))
        raise RecordingFormatError(f"undecodable entry {v!r} at event {self._events}")

    # -- Reader protocol -------------------------------------------------
    def read(self):
        with self._mutex:
            return self._read_unlocked()

    def _read_unlocked(self):
        entry = self._skip()
        if entry is None:
            raise EOFError("end of recording")
        kind, payload = entry
        if kind != VALUE:
            raise ValueError(f"expected a value at event {self._events}, found a NEW_BINDING")
        self._pos += 1
        self._events += 1
        return self._decode(payload)

    def bind(self, obj):
        with self._mutex:
            return self._bind_unlocked(obj)

    def _bind_unlocked(self, obj):
        entry = self._skip()
        if entry is None:
            raise EOFError("end of recording (expected NEW_BINDING)")
        kind, payload = entry
        if kind != BIND:
            raise ValueError(f"expected NEW_BINDING at event {self._events}, found a value")
        self._pos += 1
        self._events += 1
        self._bindings[payload] = obj

    def take_call(self, thread, call_tag, name, fp, result_tag, error_tag):
        with self._mutex:
            return self._take_call_unlocked(thread, call_tag, name, fp, result_tag, error_tag)

    def _take_call_unlocked(self, thread, call_tag, name, fp, result_tag, error_tag):
        """A whole recorded call with its outcome, or None (nothing consumed):
        see `Reader.take_call`."""
        entry = self._skip()
        if entry is None or entry[0] != VALUE or self._thread != thread:
            return None
        p = self._pos
        entries = self._tape[p:p + 5]
        if len(entries) < 5 or any(kind != VALUE for kind, _ in entries):
            return None
        try:
            tag, rname, rfp, outcome, value = (self._decode(v) for _, v in entries)
        except RecordingFormatError:
            return None
        if tag != call_tag or rname != name or rfp != fp or outcome not in (result_tag, error_tag):
            return None
        self._pos = p + 5
        self._events += 5
        more = self._skip() is not None
        return outcome == result_tag, value, more and self._thread == thread

    def take_event(self, thread, tag, accept):
        with self._mutex:
            return self._take_event_unlocked(thread, tag, accept)

    def _take_event_unlocked(self, thread, tag, accept):
        """``tag value`` when accept(value), or None (nothing consumed):
        see `Reader.take_event`."""
        entry = self._skip()
        if entry is None or entry[0] != VALUE or self._thread != thread:
            return None
        p = self._pos
        entries = self._tape[p:p + 2]
        if len(entries) < 2 or any(kind != VALUE for kind, _ in entries):
            return None
        try:
            rtag, value = (self._decode(v) for _, v in entries)
        except RecordingFormatError:
            return None
        if rtag != tag or not accept(value) or self._pos != p:
            return None
        self._pos = p + 2
        self._events += 2
        more = self._skip() is not None
        return value, more and self._thread == thread

    @property
    def events(self):
        return self._events

    @property
    def thread(self):
        if self._skip() is None:
            return None
        return self._thread

    @property
    def position(self):
        return self._events

    @property
    def next_kind(self):
        entry = self._skip()
        if entry is None:
            return None
        return "value" if entry[0] == VALUE else "binding"
