"""Signal handlers that run while the program runs pure Python (docs/SIGNALS.md).

A Python-level signal handler (``signal.signal``, and SIGINT's
``default_int_handler``, which raises KeyboardInterrupt) runs in the main
thread at the interpreter's next check for pending signals. Inside a boundary
call (phase EXTERNAL) that is a recorded ``CALLBACK`` (proxy.Callback). In
program code (phase INTERNAL) nothing marked the point until now: the replay
ran on and diverged. Here:

Record: the handler installed for real is a `SignalHandler`. Run in program
code, it writes ``SIGNAL signum position`` (the *position*: `position_of`)
before calling the program's handler. Run while our runtime works (phase
DISABLED, or an innermost frame of ours) or while the program's handler of an
earlier signal runs, it is put off to the first opcode event of program code
(a one-shot tracer: `SignalSupport._defer`): an asynchronous signal may come
a little later; it must come in program code, between two events.

Replay: no real signal is needed (setitimer/alarm/kill are replayed calls and
arm nothing). When the main thread consumed the event before a SIGNAL (the
reader's ``async_next``, checked by the sequencer after every move and forced
onto the Python path after the native fast path), `SignalReplay.on_async`
reads the SIGNAL and traces that thread's frames running the position's code
object, opcode by opcode. At the opcode event of the recorded instruction with
the same program stack and the same fingerprint of the frame's simple locals,
the tracer stops and trips the signal itself; the interpreter runs the
handler when that instruction checks for pending signals — where the record's
ran, with the same frame. If the thread reaches its next event first, the
replay stops (exit 3) naming the position.
"""
from __future__ import annotations

import bisect
import _thread
import os
import sys
import zlib

from retracesoftware.proxy.protocol import event_index
from retracesoftware.proxy.system import Callback, machinery_frame as _machinery_frame
from retracesoftware.utils import env
from retracesoftware.utils import DISABLED, EXTERNAL, INTERNAL, fingerprint, flush_pending_calls

SIGNAL = "SIGNAL"     # SIGNAL signum position        (docs/EVENTS.md)

PY312 = env.PYVERSION == (3, 12)   # PYVERSIONS
_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_SIZED = frozenset({list, tuple, dict, set, frozenset, bytearray})
_POSITION_FIELDS = 10


# ------------------------------------------------------------------ positions
def _code_key(code):
    return (os.path.basename(code.co_filename), code.co_qualname, code.co_firstlineno)


def _program_frames(frame):
    """*frame* and its callers, without frames of ours or of runpy/importlib."""
    while frame is not None:
        if not _machinery_frame(frame.f_code.co_filename):
            yield frame
        frame = frame.f_back


def _stack_signature(frame, lasti=None):
    """(depth, crc32) of the program stack: each frame's code identity and
    instruction offset. The same on record and replay whatever our own frames
    in between (a callback's record and replay paths differ)."""
    parts = []
    for f in _program_frames(frame):
        base, qual, first = _code_key(f.f_code)
        parts.append(f"{base}:{qual}:{first}:{f.f_lasti if lasti is None or f is not frame else lasti}")
    return len(parts), zlib.crc32("\n".join(parts).encode("utf-8", "surrogatepass"))


def _frame_values(frame, scalars, full, sized=True):
    try:
        local = frame.f_locals
        names = sorted(n for n in local.keys() if type(n) is str and not n.startswith("__"))
    except Exception:
        return
    for name in names:
        try:
            v = local[name]
        except Exception:
            continue
        t = type(v)
        if t in _SCALARS:
            scalars += (name, v)
            full += (name, v)
        elif sized and t in _SIZED:
            full += (name, len(v))


def _locals_fingerprints(frame):
    """(scalars, full): fingerprints of the program frames' local variables
    that are None/bool/int/float/str/bytes (by value), and of those plus the
    lengths of the innermost frame's lists/tuples/dicts/sets. What tells one
    loop iteration (or one call of a function from an outer loop) from
    another at the same instruction. The scalars alone for a position at a
    call: a call cannot rebind its caller's locals but can change a length."""
    scalars, full = [], []
    for i, f in enumerate(_program_frames(frame)):
        _frame_values(f, scalars, full, sized=i == 0)
    return fingerprint(*scalars), fingerprint(*full)


#: position[9]: where at the instruction the handler ran
AT_CHECK = 0     # at the instruction's own check for pending signals
BEFORE = 1       # before the instruction ran (a signal put off: SignalSupport._defer)


def position_of(frame, when=AT_CHECK) -> tuple:
    """The position of *frame*'s current instruction: (file basename,
    qualname, first line, instruction offset, line, stack depth, stack crc,
    scalars fingerprint, full fingerprint, when)."""
    base, qual, first = _code_key(frame.f_code)
    depth, crc = _stack_signature(frame)
    scalars, full = _locals_fingerprints(frame)
    return (base, qual, first, frame.f_lasti, frame.f_lineno or 0, depth, crc, scalars, full, when)


def describe_position(position) -> str:
    try:
        base, qual, _, lasti, line = position[:5]
        return f"{base}:{line} in {qual} (instruction {lasti})"
    except Exception:
        return repr(position)[:80]


# Instructions whose pending-signal check runs before they change anything:
# the handler runs at their opcode event. Any other instruction (a call, a
# conditional backward jump) checks after it ran: the handler runs at the
# frame's next opcode event.
_CHECK_BEFORE = frozenset({"JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "RESUME", "JUMP_ABSOLUTE"})


def _instruction(code, lasti) -> str:
    import opcode      # (dis's table; dis itself costs a replay's start ~1.5 ms more)
    try:
        return opcode.opname[code.co_code[lasti]]
    except Exception:
        return "?"


def _signame(signum) -> str:
    import signal
    try:
        return signal.Signals(signum).name
    except Exception:
        return f"signal {signum}"


def _trace_opcodes(frame, local_trace, global_trace):
    """From a 'call' event: opcode events (not lines) for this new frame."""
    frame.f_trace = local_trace
    frame.f_trace_lines = False
    frame.f_trace_opcodes = True
    if PY312:
        # 3.12 instruments the frame's code for opcode events only when the
        # trace function is set again.  # PYVERSIONS
        sys.settrace(global_trace)


# ------------------------------------------------------------------ handlers
_RUN, _CALLBACK, _LATER = "run", "callback", "later"

_STREAM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stream") + os.sep


def _writer_running(frame) -> bool:
    """The Python stream writer is on *frame*'s stack (it, or the msgpack
    Python code it calls — ``ExtType.__new__``, a namedtuple's — is
    running): a signal there cannot write its SIGNAL or CALLBACK, the
    writer is mid-write (the Python backend; the C++ writer runs no
    bytecode). Stack depth steps, only when a signal comes."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(_STREAM_DIR):
            return True
        frame = frame.f_back
    return False

class SignalHandler:
    """What is installed for real in place of a program's Python handler."""

    __slots__ = ("fn", "callback", "_support")

    def __init__(self, support, callback, fn):
        self.fn = fn
        self.callback = callback
        self._support = support

    def __call__(self, signum, frame):
        support = self._support
        what = support.deliver(signum, frame)
        if what is _LATER:
            return None
        support.running += 1
        try:
            if what is _CALLBACK:
                return self.callback(signum, frame)
            # One line for record and replay: a traceback through it is the same.
            return self.fn(signum, frame)
        finally:
            support.running -= 1

    def __repr__(self):
        return f"<retrace signal handler {self.fn!r}>"


def program_handler(handler):
    """The program's own handler behind our wrappers."""
    if type(handler) is SignalHandler or type(handler) is Callback:
        return handler.fn
    return handler


def patch_getsignal(installer, module) -> None:
    """The one patch of ``_signal.getsignal`` (the installer runs it once
    ``_signal`` is loaded, for CLI sessions and TestRunner alike). Signal
    handlers the program installs are callbacks (configs/signal.toml) or,
    in CLI sessions, `SignalHandler` objects (`install` below);
    ``getsignal`` answers with the program's own function, as
    ``signal.signal`` does for the previous handler (asyncio.run() compares
    it with ``default_int_handler``). At uninstall, handlers still installed
    are unwrapped, so the program's functions stay."""
    real = module.__dict__.get("getsignal")
    real_signal = module.__dict__.get("signal")
    if real is None or real_signal is None:
        return
    # Down to the builtin: our callback wrapper may itself stand in a
    # builtin-like substitute (install/substitutes.py), whose __wrapped__
    # is the wrapper, which would wrap the handler again.
    while getattr(real_signal, "__wrapped__", None) is not None:
        real_signal = real_signal.__wrapped__

    def getsignal(signalnum, /):
        return program_handler(real(signalnum))
    getsignal.__name__ = getsignal.__qualname__ = "getsignal"
    getsignal.__doc__ = real.__doc__
    getsignal.__wrapped__ = real
    installer.patch(module, "getsignal", getsignal)

    nsig = getattr(module, "NSIG", 65)
    # Runs after the attribute undos of later patches, before earlier ones.
    installer.on_uninstall(lambda: restore_program_handlers(real_signal, real, nsig))


def restore_program_handlers(real_signal, real_getsignal, nsig=65):
    """At uninstall: every handler still installed that is one of our
    wrappers (a `SignalHandler`, a configured callback) is replaced by the
    program's own function, so the program's handlers stay. *real_signal*
    and *real_getsignal* are the builtins."""
    for signum in range(1, nsig):
        try:
            handler = real_getsignal(signum)
            fn = program_handler(handler)
            if fn is not handler:
                real_signal(signum, fn)
        except (OSError, ValueError, RuntimeError):
            pass


class SignalSupport:
    """Both modes: decides, for each real delivery, whether the program's
    handler runs now (True), or was recorded as a callback (then the
    callback ran it), or is put off (re-tripped)."""

    def __init__(self, session):
        self.session = session
        self.system = session.system
        #: record: handlers of ours running; signals put off; their tracer is on
        self.running = 0
        self.deferred = []
        self._tracing = False
        self._old_trace = None

    def active(self):
        return getattr(self.session, "exit_code", None) is None and not getattr(self.session, "_closed", False)

    def deliver(self, signum, frame):
        """_RUN (the program's handler runs now), _CALLBACK (the proxy's
        callback wrapper runs it: recorded inside a boundary call, or just
        run) or _LATER (put off: `_defer`)."""
        system = self.system
        gate = system.gate
        phase = gate.phase
        ours = frame is None or _machinery_frame(frame.f_code.co_filename)
        if system.mode == "record" and self.active() and frame is not None and _writer_running(frame):
            # A SIGNAL or a recorded CALLBACK would write inside the write
            # (RuntimeError "StreamWriter used re-entrantly" in the program's
            # call): the handler runs at the program's next instruction.
            self._defer(signum, frame)
            return _LATER
        if system.mode == "record" and self.active() and phase != EXTERNAL:
            if phase == INTERNAL and not ours and not self.running and not self.deferred:
                self._write(signum, frame, AT_CHECK)
                return _RUN
            # Our runtime's code runs, or the program's handler of an
            # earlier signal: the handler runs at the program's next
            # instruction in program code.
            self._defer(signum, frame)
            return _LATER
        # EXTERNAL: proxy.Callback records a CALLBACK inside the call; else
        # (after the program's end; a real signal during replay) the
        # handler just runs.
        return _CALLBACK

    def _write(self, signum, frame, when):
        gate = self.system.gate
        previous = gate.swap(DISABLED)
        try:
            flush_pending_calls()      # a call in progress (callback) writes its CALL first
            self.system.writer.write(SIGNAL, signum, position_of(frame, when))
        finally:
            gate.phase = previous

    def _defer(self, signum, frame):
        """Record: run the handler at the first opcode event of program code
        (phase INTERNAL, no handler of ours running): a one-shot opcode
        tracer on this thread, over the program frames."""
        self.deferred.append(signum)
        if self._tracing:
            return
        self._tracing = True
        gate = self.system.gate

        def local_trace(f, event, arg):
            if not self._tracing:
                return None
            if event == "opcode" and gate.phase == INTERNAL and not self.running \
                    and not _writer_running(f):
                self._run_deferred(f)
                return None
            return local_trace

        def global_trace(f, event, arg):
            if not self._tracing or _machinery_frame(f.f_code.co_filename):
                return None
            _trace_opcodes(f, local_trace, global_trace)
            return local_trace

        self._old_trace = sys.gettrace()
        f = frame if frame is not None else sys._getframe(1)
        while f is not None:
            if not _machinery_frame(f.f_code.co_filename):
                f.f_trace = local_trace
                f.f_trace_lines = False
                f.f_trace_opcodes = True
            f = f.f_back
        # After the frames: 3.12+ instruments the frames' code for opcode
        # events when the trace function is set.  # PYVERSIONS
        sys.settrace(global_trace)

    def _run_deferred(self, frame):
        self._tracing = False
        sys.settrace(self._old_trace)
        self._old_trace = None
        import _signal
        while self.deferred:
            signum = self.deferred.pop(0)
            handler = program_handler(_signal.getsignal(signum))
            if not callable(handler):
                continue
            self._write(signum, frame, BEFORE)
            self.running += 1
            try:
                handler(signum, frame)
            except BaseException:
                self.deferred.clear()
                raise
            finally:
                self.running -= 1


# ------------------------------------------------------------------ replay
class _Pending:
    __slots__ = ("signum", "position", "index", "tid", "code_key", "lasti", "at_call", "after", "token",
                 "consumed", "follows")

    def __init__(self, signum, position, index, tid, consumed=True, follows=None):
        self.signum = signum
        self.position = position
        self.index = index
        self.tid = tid
        #: the SIGNAL was read (it was at the head); False: announced by the
        #: tape's index (`index_signals`), read when its handler runs
        self.consumed = consumed
        #: the index of the thread's event before it on the tape
        self.follows = index - 1 if follows is None else follows
        self.code_key = tuple(position[:3])
        self.lasti = position[3]
        self.at_call = None
        self.after = True
        self.token = object()


def index_signals(path, start=0) -> dict:
    """Read the recording at *path* once (a reader of its own,
    ``StreamReader.scan``) and return ``{mark: (index, tid, signum,
    position)}`` for every SIGNAL whose thread's previous event is not right
    before it on the tape (other threads' events lie between): *mark* is the
    event index just after that previous event, *index* the SIGNAL's. Marks
    before *start* are left out. A damaged or unreadable tail ends the index
    there (the replay reports it when it gets there)."""
    from retracesoftware.install.recording_streams import stream_reader
    marks = {}
    reader = stream_reader(path)
    try:
        found = reader.scan(SIGNAL, 2)
    except Exception:
        found = []
    finally:
        try:
            reader.close()
        except Exception:
            pass
    for index, tid, before, values in found:
        if len(values) != 2:
            continue
        signum, position = values
        if type(signum) is int and isinstance(position, (tuple, list)) and len(position) == _POSITION_FIELDS \
                and before is not None and before != index and before >= start:
            marks[before] = (index, tid, signum, tuple(position))
    return marks


def _head_index(reader) -> int:
    """The event index of the head as `index_signals` and ``async_next``
    count it: with the head decoded. Right after a read the reader has not
    decoded what follows yet, and a THREAD_SWITCH (or a BINDING_DELETE)
    before the next event counts when it is (before: an announced SIGNAL
    right after another SIGNAL of its thread was missed, exit 3)."""
    reader.next_kind
    return event_index(reader)


class SignalReplay:
    """Replay: finds recorded positions and trips the signal there."""

    def __init__(self, support, reader, sequencer):
        self.support = support
        self.system = support.system
        self.reader = reader
        self.seq = sequencer
        self.pending = None
        self._old_trace = None
        self._code_match = {}
        #: `index_signals` of the tape (built at the first thread start)
        self.announced = {}
        self._used_mark = None
        #: thread -> its marks in `announced`, ascending (`_due`)
        self._marks_of = {}
        #: an announced SIGNAL whose mark came while another one was pending
        #: or its handler was being entered (at most one: see on_async)
        self._queued = []
        self._firing = False
        self._raw = None
        self._indexed = False

    # The index is a second read of the tape (StreamReader.scan: a byte
    # search of the frames when no SIGNAL is on it, else about 10-26 ns per
    # event with the C++ reader, 0.4-0.9 µs with the Python one), made when a
    # second thread is announced: a SIGNAL can be separated from its
    # thread's previous event only then. Every such replay is indexed, not
    # only those with a handler the program installed: Python's own SIGINT
    # handler (Ctrl-C while the main thread runs pure Python) needs it too.
    def thread_announced(self):
        if self._indexed or self._raw is None:
            return
        self._indexed = True
        self.index(self._raw)

    def forked(self):
        """A forked child's replay switched to the child's own tape
        (``StreamReader.reopen`` cleared the parent's marks): forget the
        parent's index and make the child's when the child starts its first
        thread (before that, each SIGNAL follows its thread's previous event)."""
        self.announced = {}
        self._marks_of = {}
        self._queued = []
        self._used_mark = None
        self._indexed = False
        self.seq.on_first_expect = self.thread_announced

    def index(self, raw):
        """Index the tape's SIGNAL events that other threads' events
        separate from their thread's previous event (docs/SIGNALS.md), and
        give the reader their marks, so that a native hand-over at a mark
        takes the Python path (`on_async`). A mark the calling thread has
        already passed (its SIGNAL still ahead) is announced now."""
        path = getattr(raw, "path", None)
        if path is None or not hasattr(raw, "async_marks"):
            return
        gate = self.system.gate
        previous = gate.swap(DISABLED)      # our own reads (the signal() patch runs INTERNAL)
        try:
            marks = index_signals(path)
        except Exception:
            return      # unreadable: such SIGNALs diverge (exit 3) as before
        finally:
            gate.phase = previous
        if not marks:
            return
        with self.seq.decisions:        # (the Python paths stand still)
            here = _head_index(raw)
            self.announced = {m: e for m, e in marks.items() if e[0] >= here}
            for mark, entry in sorted(self.announced.items()):
                self._marks_of.setdefault(entry[1], []).append(mark)
            raw.async_marks = frozenset(m for m in self.announced if m > here) or None
            due = self._due(here)
            if due is not None:
                if self.pending is not None or self._firing:
                    self._queued.append(due)
                else:
                    self._start(*due)
                    self._arm(None)

    def _due(self, here):
        """The calling thread's announced SIGNAL whose mark it passed (it
        consumed the event before it) and that is still ahead of *here*,
        not announced before: ``(mark, entry)`` or None. Marked as used.
        By the mark passed, not by the head being at it: a native take of
        another thread may move the head on before this thread's Python
        hand-over runs (the hand-over waits for the condition)."""
        marks = self._marks_of.get(self.system.thread_id())
        if not marks:
            return None
        i = bisect.bisect_right(marks, here) - 1
        if i < 0:
            return None
        mark = marks[i]
        entry = self.announced[mark]
        if entry[0] < here or mark == self._used_mark:
            return None
        self._used_mark = mark
        return mark, entry

    # called by the sequencer (its condition held) after a move when the
    # reader says async_next: a SIGNAL at the head, or an index's mark
    def on_async(self):
        me = self.system.thread_id()
        reader = self.reader
        index = _head_index(reader)
        due = self._due(index)
        if due is not None:
            self._announce(*due)
            return
        if self._firing or index in self.announced or reader.thread != me \
                or not reader.async_next:
            return      # (while a handler is entered: the head is taken after it, _fire)
        self._take()
        due = self._due(_head_index(reader))
        if due is not None:
            # The thread's next SIGNAL after this one, past other threads' events.
            self._queued.append(due)
        # Already there: the event just consumed was a call at the position
        # (the signal came when it returned): fire at the frame's next
        # instruction.
        frame = next(_program_frames(sys._getframe(1)), None)
        self._arm(frame if frame is not None and self._matches(frame) else None)

    def _announce(self, mark, entry):
        """The thread consumed its event before an announced SIGNAL: search
        for its position from here (the SIGNAL is read when it is found)."""
        if self.pending is not None or self._firing:
            self._queued.append((mark, entry))
            return
        self._start(mark, entry)
        frame = next(_program_frames(sys._getframe(2)), None)
        self._arm(frame if frame is not None and self._matches(frame) else None)

    def _start(self, mark, entry):
        index, tid, signum, position = entry
        self._pending(_Pending(signum, position, index, tid, consumed=False, follows=mark - 1))

    def _take(self):
        """Read the SIGNAL at the head (the condition held): pending."""
        system = self.system
        reader = self.reader
        index = _head_index(reader)
        tag = reader.read()
        signum = reader.read()
        position = reader.read()
        if (tag != SIGNAL or type(signum) is not int or not isinstance(position, (tuple, list))
                or len(position) != _POSITION_FIELDS):
            raise system._diverge(index, "a SIGNAL event", f"{tag!r} {signum!r} (a damaged SIGNAL)")
        if self.pending is not None:
            raise system._diverge(index, f"{_signame(self.pending.signum)} handled at "
                                  f"{describe_position(self.pending.position)}",
                                  f"another {_signame(signum)} first")
        self._pending(_Pending(signum, tuple(position), index, system.thread_id()))

    def _pending(self, pending):
        self.pending = pending
        self.seq.turn.closed += 1          # every call checks (before_turn) until it is found
        self.system.before_turn = self._not_reached

    def _consume(self, pending):
        """An announced SIGNAL's position is reached: read the SIGNAL in the
        thread's turn (the other threads' events before it on the tape
        happen first, as they did)."""
        system = self.system
        gate = system.gate
        previous = gate.swap(DISABLED)
        self._firing = True
        try:
            seq = system.take_turn(f"{_signame(pending.signum)} handled at "
                                   f"{describe_position(pending.position)}")
            try:
                reader = self.reader
                index = _head_index(reader)
                try:
                    got = (reader.read(), reader.read(), reader.read())
                except Exception as exc:
                    got = (f"no event ({exc})",)
                if (index != pending.index or got[0] != SIGNAL or got[1] != pending.signum
                        or not isinstance(got[2], (tuple, list)) or tuple(got[2]) != pending.position):
                    raise system._diverge(index, f"SIGNAL {pending.signum} (event {pending.index})",
                                          " ".join(repr(v) for v in got)[:120])
            finally:
                seq.release()
        finally:
            self._firing = False
            gate.phase = previous

    def _matches_code(self, code):
        key = id(code)
        hit = self._code_match.get(key)
        if hit is None or hit[0] is not code:
            hit = (code, _code_key(code) == self.pending.code_key)
            self._code_match[key] = hit
        return hit[1]

    def _matches(self, frame) -> bool:
        """*frame* is at the position (before its instruction runs)."""
        p = self.pending
        if frame.f_lasti != p.lasti or not self._matches_code(frame.f_code):
            return False
        if p.at_call is None:
            op = _instruction(frame.f_code, p.lasti)
            p.at_call = op.startswith("CALL")
            p.after = op not in _CHECK_BEFORE and p.position[9] != BEFORE
        if _stack_signature(frame) != tuple(p.position[5:7]):
            return False
        scalars, full = _locals_fingerprints(frame)
        return scalars == p.position[7] if p.after and p.at_call else full == p.position[8]

    def _matches_start(self, frame) -> bool:
        p = self.pending
        if frame.f_lasti > 0 or _instruction(frame.f_code, 0) != "RESUME":
            return False
        if _stack_signature(frame, 0) != tuple(p.position[5:7]):
            return False
        return _locals_fingerprints(frame)[1] == p.position[8]

    def _arm(self, after=None):
        """Trace the frames running the position's code, opcode by opcode.
        At a loop's backward jump or a function's start the handler runs at
        that instruction's opcode event (the state is the one its
        pending-signal check saw); at a call, at the frame's next opcode
        event, once the call returned (*after*: the frame whose call it is)."""
        pending = self.pending
        token = pending.token
        state = [after]

        def local_trace(frame, event, arg):
            if self.pending is None or self.pending.token is not token:
                return None
            if event != "opcode":
                return local_trace
            if state[0] is not None:
                if frame is state[0]:
                    state[0] = None
                    self._fire(frame)
                    return frame.f_trace
                return local_trace
            if frame.f_lasti == pending.lasti and self._matches(frame):
                if pending.after:
                    state[0] = frame
                    return local_trace
                self._fire(frame)
                return frame.f_trace      # (another signal may have re-armed it)
            return local_trace

        def global_trace(frame, event, arg):
            if self.pending is None or self.pending.token is not token:
                return None
            if self._matches_code(frame.f_code):
                if event == "call" and pending.lasti == 0 and self._matches_start(frame):
                    # A function's first RESUME: its 'call' event (no opcode event on 3.11).
                    self._fire(frame)
                    return frame.f_trace
                _trace_opcodes(frame, local_trace, global_trace)
                return local_trace
            return None

        if self._old_trace is None:
            self._old_trace = sys.gettrace()
        frame = sys._getframe(1)
        while frame is not None:
            if not _machinery_frame(frame.f_code.co_filename) and self._matches_code(frame.f_code):
                frame.f_trace = local_trace
                frame.f_trace_lines = False
                frame.f_trace_opcodes = True
            frame = frame.f_back
        # After the frames: 3.12+ instruments the frames' code for opcode
        # events when the trace function is set.  # PYVERSIONS
        sys.settrace(global_trace)

    def _disarm(self):
        pending, self.pending = self.pending, None
        self.system.before_turn = None
        if pending is not None:
            sys.settrace(self._old_trace)
            self._old_trace = None
            with self.seq.decisions:
                self.seq.turn.closed -= 1
        self._code_match.clear()

    def _fire(self, frame):
        """The position is reached: run the program's handler for the
        signal, as the interpreter would have (its exception propagates into
        *frame* at this instruction). Then the next asynchronous event, if
        it is at this same point (a signal put off while the first one's
        handler ran)."""
        import _signal
        while True:
            pending = self.pending
            signum = pending.signum
            index = pending.index
            self._disarm()
            if not pending.consumed:
                self._consume(pending)
            handler = program_handler(_signal.getsignal(signum))
            if not callable(handler):
                raise self.system._diverge(index, f"a Python handler for {_signame(signum)}",
                                           f"handler {handler!r} installed")
            gate = self.system.gate
            previous = gate.swap(INTERNAL)
            try:
                handler(signum, frame)
            finally:
                gate.phase = previous
            if self.pending is None:
                with self.seq.decisions:
                    if self._queued:
                        # The thread's next SIGNAL, past other threads' events.
                        self._start(*self._queued.pop(0))
                    elif (self.reader.async_next and self.reader.thread == self.system.thread_id()
                            and event_index(self.reader) not in self.announced):
                        self._take()
                        # The head moved (maybe to another thread's event):
                        # wake the waiters, as a turn's release does.
                        self.seq.changed()
                        due = self._due(_head_index(self.reader))
                        if due is not None:
                            self._queued.append(due)
                if self.pending is None:
                    return
                if self._matches(frame) and not self.pending.after:
                    continue
                self._arm(frame if self._matches(frame) else None)
                return
            if self._matches(frame):
                if not self.pending.after:
                    continue
                self._arm(frame)
            return

    def _not_reached(self, what=None):
        pending = self.pending
        if pending is None or pending.tid != self.system.thread_id():
            return
        self._disarm()
        system = self.system
        raise system._diverge(
            event_index(self.reader),
            f"{_signame(pending.signum)} handled at {describe_position(pending.position)} "
            f"(recorded after event {pending.follows})",
            "the thread's next event: the replay never reached that point")


# ------------------------------------------------------------------ install
def install(session) -> None:
    """Wrap the program's Python-level signal handlers (CLI sessions)."""
    import _signal
    system = session.system
    installer = session.installer
    real_signal = _signal.signal
    while getattr(real_signal, "__wrapped__", None) is not None:
        real_signal = real_signal.__wrapped__
    real_getsignal = _signal.getsignal
    while getattr(real_getsignal, "__wrapped__", None) is not None:
        real_getsignal = real_getsignal.__wrapped__
    support = SignalSupport(session)
    session.signals = support

    def signal(signalnum, handler, /):
        if callable(handler) and type(handler) is not SignalHandler:
            fn = program_handler(handler)
            handler = SignalHandler(support, system.callback(fn), fn)
        return program_handler(real_signal(signalnum, handler))
    signal.__name__ = signal.__qualname__ = "signal"
    signal.__doc__ = real_signal.__doc__
    signal.__wrapped__ = real_signal

    # (``getsignal`` is patched once, by `patch_getsignal`: it unwraps the
    # SignalHandler objects made here too.)
    installer._set(_signal, "signal", signal)
    # (signal.signal raises ValueError outside the main thread. No
    # threading.current_thread() here: on replay, before the recorded main
    # ident is adopted, it would register a dummy thread under the real
    # ident, and a forked child's threading would take that for its main.)
    try:
        if system.mode == "replay":
            # SIGINT as the recorded process started with it: a process
            # started from a background job of a script inherits it ignored
            # (no KeyboardInterrupt on Ctrl-C); the replay may start either
            # way (preamble ``options.sigint``, absent: Python's default).
            preamble = getattr(session, "preamble", None)
            options = (preamble.get("options") or {}) if isinstance(preamble, dict) else {}
            start = real_getsignal(_signal.SIGINT)
            if options.get("sigint") == "ignored":
                if start is _signal.default_int_handler:
                    real_signal(_signal.SIGINT, _signal.SIG_IGN)
            elif start is _signal.SIG_IGN:
                real_signal(_signal.SIGINT, _signal.default_int_handler)
        current = real_getsignal(_signal.SIGINT)
        if current is _signal.default_int_handler:
            fn = _signal.default_int_handler
            real_signal(_signal.SIGINT, SignalHandler(support, system.callback(fn), fn))
    except (ValueError, OSError):
        pass

    nsig = getattr(_signal, "NSIG", 65)
    # The SignalHandler objects this `signal` installed, unwrapped when it is undone.
    installer._undo.append(lambda: restore_program_handlers(real_signal, real_getsignal, nsig))

    if system.mode != "replay":
        return
    seq = system.sequencer
    raw = getattr(session.reader, "_reader", session.reader)
    if seq is None or not hasattr(raw, "async_next"):
        return      # a reader without the check (in-memory): SIGNAL events diverge at the next call
    raw.async_tags = (SIGNAL,)
    replay = SignalReplay(support, system.reader, seq)
    session.signal_replay = replay
    seq.on_async = replay.on_async
    replay._raw = raw
    seq.on_first_expect = replay.thread_announced
