"""What the program emits on stdout/stderr is checked on replay, and its own
descriptor plumbing of the standard streams has the same effect on replay.

Output check (docs/RELIABILITY.md "Output"): every write the program makes
to the standard streams — ``sys.stdout``/``sys.stderr`` (``print``, C
extensions writing through them), their ``.buffer`` and ``.buffer.raw``,
``sys.__stdout__``/``__stderr__``, and ``os.write`` on a descriptor that is
the process's stdout/stderr (or a ``dup`` of it) — is one boundary call
``retrace.output(stream, <write>)`` whose recorded result is a summary of
the bytes: ``<q result><q length><I crc32>`` + the first `HEAD` bytes. The
replay writes for real (program output is real output) after comparing: the
first write whose bytes differ stops the replay (exit 3) naming the event,
the first differing bytes, recorded vs replayed, and the program's stack.

Only a write the program makes (phase INTERNAL) counts; what the write does
inside (a text write flushing its buffer into the binary layer and the
descriptor) runs EXTERNAL, as in any boundary call, and so does ``flush()``
and ``close()`` of those streams: where the interpreter's buffers flush
depends on whether the stream is a terminal, which may differ between the
recording and its replay.

Descriptor plumbing: ``os.dup``, ``os.dup2`` and ``os.close`` stay recorded
calls (their results are data), and a small table follows which descriptor
numbers are the process's original stdout/stderr. On replay, when the
program points fd 1 or 2 somewhere else (pytest's capture: ``dup2`` of a
temporary file onto 1), the real fd 1/2 of the replaying process is pointed
at ``/dev/null`` (what went there when recorded came back through recorded
reads, if the program read it), and pointed back at the original when the
program ``dup2``s a saved copy back. So what the program writes through the
interpreter's own ``sys.stdout`` lands where it landed when recorded.
"""
from __future__ import annotations

import _io
import _thread
import os
import posix
import struct
import sys
import weakref
import zlib
from collections import deque as _deque

from retracesoftware.utils import DISABLED, EXTERNAL, INTERNAL
from retracesoftware.utils.isolate import isolate_module

# Private copies taken at import, before any patch (utils/isolate.py).
_real_posix = isolate_module(posix)
_real_writev = getattr(_real_posix, "writev", None)
_crc32 = zlib.crc32
_pack = struct.Struct("<qqI").pack
_unpack_from = struct.Struct("<qqI").unpack_from
_SUMMARY = struct.calcsize("<qqI")
_real_id = id

#: record: held across a program write and its event (re-entrant: a signal
#: handler or finalizer may write inside a write). Our own lock, from the
#: unpatched ``_thread``; a forked child starts with it free.
_WRITE_LOCK = _thread.RLock()
_allocate_lock = _thread.allocate_lock
_get_ident = _thread.get_ident
if hasattr(_real_posix, "register_at_fork"):
    _real_posix.register_at_fork(after_in_child=_WRITE_LOCK._at_fork_reinit)

#: bytes of each write kept on the tape, to show what was recorded when a
#: replayed write differs (the rest is covered by length and CRC-32)
HEAD = 160
#: the tape name of an output write
OUTPUT_CALL = "retrace.output"


class Write:
    """What the output boundary function is handed: the fingerprint sees
    only the stream name and this type's name (the bytes are compared by
    `OutputCheck`, which can say how they differ)."""

    __slots__ = ("summary", "error")

    def __init__(self):
        self.summary = None
        self.error = None


def _emitted(stream, write):
    """The output boundary function (record: the summary, or the write's error)."""
    if write.error is not None:
        raise write.error
    return write.summary


def _as_bytes(data) -> bytes:
    if type(data) is str:
        return data.encode("utf-8", "surrogatepass")
    if type(data) is bytes:
        return data
    try:
        return memoryview(data).cast("B").tobytes()
    except (TypeError, ValueError):
        return str(data).encode("utf-8", "backslashreplace")


def summarize(result, data: bytes) -> bytes:
    r = result if type(result) is int else -1
    return _pack(r, len(data), _crc32(data)) + data[:HEAD]


def _line_at(data: bytes, at: int, width: int = 72) -> str:
    """The line of *data* around byte *at*, escaped, cut to *width*."""
    start = data.rfind(b"\n", 0, at) + 1
    end = data.find(b"\n", at)
    end = len(data) if end < 0 else end + 1
    if at - start > width // 2:
        start = at - width // 2
    end = min(end, start + width)
    text = data[start:end].decode("utf-8", "backslashreplace")
    shown = repr(text)
    if start > 0:
        shown = "…" + shown
    if end < len(data):
        shown += "…"
    return shown


def _bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


def describe_difference(recorded: bytes, length: int, replayed: bytes, before: bytes = b""):
    """(expected, actual) texts for a write whose bytes differ; *before* is
    what the program wrote on the same line just before (shown as context)."""
    limit = min(len(recorded), len(replayed))
    at = next((i for i in range(limit) if recorded[i] != replayed[i]), limit)
    if before and len(recorded) == length:
        # The line so far, then the write: "cut to a line" across the
        # pieces print() writes separately.
        recorded, replayed, at = before + recorded, before + replayed, at + len(before)
        length, offset = length + len(before), len(before)
    else:
        offset = 0
    if at >= len(recorded) and length > len(recorded) and at < len(replayed):
        # Past the bytes the recording keeps: only the replay's side to show.
        return (f"{length} bytes whose first {len(recorded)} agree (the rest is kept as a CRC only)",
                f"{len(replayed)} bytes differing after byte {len(recorded)}: {_line_at(replayed, at)}")
    rec = _line_at(recorded, at) if recorded else "''"
    rep = _line_at(replayed, at) if replayed else "''"
    if at >= len(recorded):
        rec = f"{rec} (the recorded write ends there)"
    if at >= len(replayed):
        rep = f"{rep} (the replayed write ends there)"
    return (f"{rec} (a write of {_bytes(length - offset)})",
            f"{rep} (a write of {_bytes(len(replayed) - offset)}, differing from byte {at - offset})")


def _std_objects():
    """{id(obj): (obj, stream name, level)} for the interpreter's standard
    stream objects writing to fd 1 and 2."""
    found = {}
    levels = {_io.TextIOWrapper: "text", _io.BufferedWriter: "buffer", _io.FileIO: "raw"}
    for obj in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        layer = obj
        while layer is not None:
            level = levels.get(type(layer))
            if level is None:
                break
            try:
                fd = layer.fileno()
            except Exception:
                break
            if fd not in (1, 2):
                break
            found[_real_id(layer)] = (layer, "stdout" if fd == 1 else "stderr", level)
            # (PYTHONUNBUFFERED / -u: the text layer sits on the FileIO)
            layer = getattr(layer, "buffer" if level == "text" else "raw", None) if level != "raw" else None
    return found


class _WriteOrder:
    """Replay: real writes of several threads happen in the order of their
    events on the tape.

    A thread registers (`enter`) before it takes its output event, at a
    moment the tape's head is its own (it waits for its turn when not) — so
    every earlier output event of another thread is registered already and
    no later one can be: registrations follow the tape. After taking the
    event the thread `wait`s until every earlier registered write is done,
    writes, and `leave`s. Taking the event stays native (no turn in
    Python when the head is already the thread's); a single writing thread
    never waits. A write made inside a write of the same thread (a
    finalizer or signal handler run while taking the event) is earlier on
    the tape than the outer one: it is not ordered again."""

    __slots__ = ("_seq", "_lock", "_pending", "_inside")

    def __init__(self, seq):
        self._seq = seq
        self._lock = _allocate_lock()
        self._pending = _deque()      # entries [thread ident, waiter lock or None]
        self._inside = {}             # thread ident -> nesting of its writes

    def enter(self, system):
        me = _get_ident()
        inside = self._inside
        if inside.get(me):
            inside[me] += 1
            return None
        reader = system.reader
        entry = [me, None]
        if ((system.special_events is None or not self._seq.threads_announced)
                and reader.thread == system.thread_id()):
            # The head is this thread's: no other thread can take an event
            # before this one does. Not when special events can be at the
            # head (a garbage collection recorded just before this write,
            # install/gc_points.py) and other threads exist: the turn runs
            # them first, and the other threads' writes made during that
            # collection, earlier on the tape than this one, must not wait
            # for it. (One thread: the shortcut; the turn costs ~3 us a write.)
            with self._lock:
                self._pending.append(entry)
        else:
            turn = system.take_turn("output")
            try:
                with self._lock:
                    self._pending.append(entry)
            finally:
                turn.release()
        inside[me] = 1
        return entry

    def wait(self, entry):
        if entry is None:
            return
        with self._lock:
            if self._pending[0] is entry:
                return
            waiter = _allocate_lock()
            waiter.acquire()
            entry[1] = waiter
        # Released by the write before this one. Bounded: an older
        # recording can hold another thread's events between a write's call
        # and its result; that thread then waits here for this one, which
        # waits for its turn — after the sequencer's deadlock timeout the
        # write goes out (maybe out of order) rather than never.
        waiter.acquire(True, self._seq.deadlock_timeout)

    def leave(self, entry):
        me = _get_ident()
        inside = self._inside
        n = inside.get(me, 1) - 1
        if n > 0:
            inside[me] = n
        else:
            inside.pop(me, None)
        if entry is None:
            return
        with self._lock:
            pending = self._pending
            first = pending and pending[0] is entry
            try:
                pending.remove(entry)
            except ValueError:
                pass
            if first and pending:
                waiter = pending[0][1]
                if waiter is not None:
                    pending[0][1] = None
                    waiter.release()


class OutputCheck:
    """Install the output check and the std-descriptor plumbing into a
    session (record or replay). ``check=False`` (replay ``--no-check-output``)
    keeps the tape's shape but compares nothing."""

    def __init__(self, session, *, check=True):
        self.session = session
        self.system = session.system
        self.gate = self.system.gate
        self.replay = self.system.mode == "replay"
        self.check = check
        self.tape = self.system.patch_function(_emitted, OUTPUT_CALL)
        #: fd -> the standard stream it is ("stdout"/"stderr"), per the
        #: program's recorded dup/dup2/close; absent: something else
        self.std_fds = {1: "stdout", 2: "stderr"}
        #: replay: real copies of this process's original fd 1 and 2
        self._saved = {}
        self._devnull = None
        #: replay: per stream, the end of the current line written so far
        #: (context for a divergence report)
        self._line = {}
        #: replay: the real writes in the tape's order of their events
        self._order = None
        if self.replay and self.system.sequencer is not None:
            self._order = _WriteOrder(self.system.sequencer)
            ref = weakref.ref(self)

            def forked():
                check = ref()
                if check is not None and check._order is not None:
                    check._order = _WriteOrder(check.system.sequencer)
            if hasattr(_real_posix, "register_at_fork"):
                _real_posix.register_at_fork(after_in_child=forked)

    # ------------------------------------------------------------ install
    def install(self, installer):
        objects = _std_objects()
        if self.replay:
            previous = self.gate.swap(DISABLED)
            try:
                for fd, name in ((1, "stdout"), (2, "stderr")):
                    try:
                        self._saved[name] = _real_posix.dup(fd)
                    except OSError:
                        pass
            finally:
                self.gate.phase = previous
        by_level = {}
        for key, (obj, name, level) in objects.items():
            by_level.setdefault(level, {})[key] = name
        from retracesoftware.utils import MethodGateway
        for level, cls in (("text", _io.TextIOWrapper), ("buffer", _io.BufferedWriter), ("raw", _io.FileIO)):
            names = by_level.get(level)
            if not names:
                continue
            real_write = cls.__dict__["write"]
            attrs = {"write": MethodGateway(names, self._writer(names, real_write, level == "raw"), real_write)}
            for method in ("flush", "close"):
                real = cls.__dict__.get(method)
                if real is not None:
                    attrs[method] = MethodGateway(names, self._outside(real), real)
            for attr, value in attrs.items():
                installer.patch(cls, attr, value, is_type=True)
        self._patch_os(installer)

    def _outside(self, real):
        gate = self.gate

        def call(self_, *args):
            if gate.phase != INTERNAL:
                return real(self_, *args)
            gate.phase = EXTERNAL
            try:
                return real(self_, *args)
            finally:
                gate.phase = INTERNAL
        return call

    def _writer(self, names, real, raw):
        gate = self.gate
        check = self

        system = self.system

        def write(self_, data):
            if gate.phase != INTERNAL or system.divergence is not None:
                return real(self_, data)
            return check.emit(names[_real_id(self_)], data, lambda: real(self_, data),
                              (lambda view: real(self_, view)) if raw else None)
        return write

    # ---------------------------------------------------------------- core
    def emit(self, stream, data, do_write, write_part=None):
        """One program write of *data* to *stream* (phase INTERNAL).
        *do_write()* writes it for real; *write_part(view)* (raw writes:
        may write less) lets the replay write exactly the recorded amount."""
        gate = self.gate
        box = Write()
        if not self.replay:
            points = getattr(self.session, "gc_points", None)
            if points is not None:
                # A collection due runs before the write, as on replay
                # (the replay writes for real after taking the event).
                # Outside the lock: a finalizer may wait for another thread.
                points.before_call()
            # The real write and its event are one step: no other thread's
            # write comes between them, so the tape's order of writes is
            # the order the bytes really went out (the replay writes in
            # tape order, see below).
            _WRITE_LOCK.acquire()
            try:
                gate.phase = EXTERNAL
                try:
                    result = do_write()
                except Exception as exc:
                    box.error = exc
                    result = None
                finally:
                    gate.phase = INTERNAL
                if box.error is None:
                    box.summary = summarize(result, _as_bytes(data))
                    self.tape(stream, box)
                    return result
                try:
                    self.tape(stream, box)
                finally:
                    box = None
            finally:
                _WRITE_LOCK.release()
        order = self._order
        if order is None:
            return self._replay_write(stream, data, do_write, write_part, box)
        entry = order.enter(self.system)
        try:
            return self._replay_write(stream, data, do_write, write_part, box, order, entry)
        finally:
            order.leave(entry)

    def _replay_write(self, stream, data, do_write, write_part, box, order=None, entry=None):
        gate = self.gate
        from retracesoftware.proxy.protocol import event_index
        index = event_index(self.session.reader)
        summary = self.tape(stream, box)      # a recorded error is raised here
        if type(summary) is not bytes or len(summary) < _SUMMARY:
            raise self.system.diverge(index, "an output summary", f"output to {stream}")
        result, length, crc = _unpack_from(summary)
        if self.check:
            replayed = _as_bytes(data)
            if len(replayed) != length or _crc32(replayed) != crc:
                expected, actual = describe_difference(summary[_SUMMARY:], length, replayed,
                                                       self._line.get(stream, b""))
                raise self.system.diverge(index, f"output to {stream} {expected}",
                                           f"output {actual}")
            nl = replayed.rfind(b"\n")
            line = replayed[nl + 1:] if nl >= 0 else self._line.get(stream, b"") + replayed
            self._line[stream] = line[-80:]
        if order is not None:
            order.wait(entry)      # the other threads' earlier writes first
        gate.phase = EXTERNAL
        try:
            if write_part is None or result < 0:
                do_write()
            else:
                view = memoryview(data).cast("B") if type(data) is not bytes else memoryview(data)
                done = 0
                while done < result:
                    n = write_part(view[done:result])
                    if not n:
                        break
                    done += n
        except OSError:
            pass   # the replay's own terminal or pipe went away: the recording says what happened
        finally:
            gate.phase = INTERNAL
        return result if result >= 0 else None

    # ------------------------------------------------------- descriptors
    def _patch_os(self, installer):
        """``os.write`` on a standard stream's descriptor is output;
        ``dup``/``dup2``/``close`` keep `std_fds` (and on replay the real
        fd 1/2) as the program left them."""
        check = self
        gate = self.gate
        std = self.std_fds
        patched = {}
        write_gw = posix.write
        dup_gw = posix.dup
        dup2_gw = posix.dup2
        close_gw = posix.close

        def write(fd, data, /):
            stream = (std.get(fd) if gate.phase == INTERNAL and type(fd) is int
                      and check.system.divergence is None else None)
            if stream is None:
                return write_gw(fd, data)
            real_fd = fd if not check.replay or fd in (1, 2) else check._saved.get(stream, fd)
            return check.emit(stream, data, lambda: _real_posix.write(real_fd, data),
                              lambda view: _real_posix.write(real_fd, view))
        patched["write"] = (write_gw, write)

        writev_gw = getattr(posix, "writev", None)
        if writev_gw is not None and _real_writev is not None:
            def writev(fd, buffers, /):
                stream = (std.get(fd) if gate.phase == INTERNAL and type(fd) is int
                          and check.system.divergence is None else None)
                if stream is None:
                    return writev_gw(fd, buffers)
                buffers = list(buffers)
                data = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
                real_fd = fd if not check.replay or fd in (1, 2) else check._saved.get(stream, fd)
                return check.emit(stream, data, lambda: _real_writev(real_fd, buffers),
                                  lambda view: _real_posix.write(real_fd, view))
            patched["writev"] = (writev_gw, writev)

        def dup(fd, /):
            r = dup_gw(fd)
            if gate.phase == INTERNAL and type(r) is int:
                stream = std.get(fd)
                if stream is not None:
                    std[r] = stream
                else:
                    std.pop(r, None)
            return r
        patched["dup"] = (dup_gw, dup)

        def dup2(fd, fd2, inheritable=True):
            r = dup2_gw(fd, fd2, inheritable)
            if gate.phase == INTERNAL:
                stream = std.get(fd)
                if stream is not None:
                    std[fd2] = stream
                else:
                    std.pop(fd2, None)
                if check.replay and fd2 in (1, 2):
                    check._point(fd2, stream)
            return r
        patched["dup2"] = (dup2_gw, dup2)

        def close(fd, /):
            r = close_gw(fd)
            if gate.phase == INTERNAL and type(fd) is int:
                std.pop(fd, None)
                if check.replay and fd in (1, 2):
                    check._point(fd, None)
            return r
        patched["close"] = (close_gw, close)

        replacements = {}
        for name, (old, new) in patched.items():
            new.__name__ = new.__qualname__ = name
            new.__module__ = "posix"
            new.__doc__ = getattr(old, "__doc__", None)
            new.__wrapped__ = old
            for module in (posix, os):
                if module.__dict__.get(name) is old:
                    installer.patch(module, name, new)
            replacements[id(old)] = (old, new)
        installer.replace_everywhere(replacements)

    def own_fds(self) -> set:
        """The descriptors this check opened for itself (saved copies of the
        original stdout/stderr, /dev/null): never the program's to close."""
        fds = {fd for fd in self._saved.values() if isinstance(fd, int)}
        if isinstance(self._devnull, int):
            fds.add(self._devnull)
        return fds

    def _point(self, fd, stream):
        """Replay: make the real *fd* (1 or 2) what the program made it:
        the original stream (*stream*) or elsewhere (/dev/null)."""
        previous = self.gate.swap(DISABLED)
        try:
            source = self._saved.get(stream) if stream is not None else None
            if source is None:
                if self._devnull is None:
                    self._devnull = _real_posix.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                source = self._devnull
            _real_posix.dup2(source, fd)
        except OSError:
            pass
        finally:
            self.gate.phase = previous


def install(session, installer, *, check=True):
    output = OutputCheck(session, check=check)
    output.install(installer)
    return output
