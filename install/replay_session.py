"""The replay session: the program runs again and its boundary calls are
answered from the recording (install/session_base.py has what record shares).
"""
from __future__ import annotations

import _thread
import os
import sys

from retracesoftware.install import report
from retracesoftware.install.redaction import install_redaction
from retracesoftware.install.session_base import Session, can_hash_identities
from retracesoftware.utils import DISABLED
from retracesoftware.utils.errors import RecordingFormatError, ReplayDivergence
from retracesoftware.utils.isolate import isolate_module

# Private copies taken at import, before any patch (utils/isolate.py).
_real_os = isolate_module(os)
_real_thread = isolate_module(_thread)
#: seconds a replay whose tape has run out (no exit trailer) may stay blocked
_TAPE_END_GRACE = 1.0
_write_stderr = report.write   # the user's stderr
_flush_stderr = sys.stderr.flush


#: set in the environment of a subprocess replayed by a replaying parent
CHILD_REPLAY_ENV = "RETRACE_CHILD_REPLAY"


def _stop_line(exc, event) -> str:
    """The one line a replay stops with when its recording runs out early."""
    if isinstance(exc, EOFError):
        return (f"the recording ends early at event {event} (the recorded program was killed) "
                f"— replay stopped there")
    reason = getattr(exc, "reason", None) or str(exc)
    if reason.startswith("torn frame"):
        return (f"the recording ends early at event {event} (torn frame: the recorded program was "
                f"killed while its recording was being written) — replay stopped there")
    offset = getattr(exc, "offset", None)
    where = f", byte {offset}" if offset is not None else ""
    return (f"the recording is damaged at event {event}{where} ({reason}) — replay stopped there; "
            f"re-record to replay past it")


class ReplayReader:
    """The StreamReader as the replay engine sees it.

    A recording that stops early (no ``retrace.exit`` call at its end: the
    program was killed, or writing the recording failed) or is damaged (torn
    frame, CRC mismatch) ends the replay at that event with one line and exit
    code 4, whichever thread or call reaches it — instead of a divergence
    report (exit 3) about whatever call happened to come next, a traceback
    from a thread, or an exception the program could catch. The end of the
    tape *after* the exit call (``finish``) is ordinary: EOFError passes on.
    """

    __slots__ = ("_reader", "_session", "read", "bind", "take_call", "take_event")

    def __init__(self, reader, session):
        from retracesoftware.functional import handle
        self._reader = reader
        self._session = session
        # Native wrappers: no cost on the replay hot path until the end.
        self.read = handle(reader.read, (EOFError, RecordingFormatError), self._ended)
        self.bind = handle(reader.bind, (EOFError, RecordingFormatError), self._ended)
        # Never raises for the tape (it leaves anything odd to read()).
        self.take_call = reader.take_call
        self.take_event = reader.take_event

    def _ended(self, exc):
        if isinstance(exc, EOFError) and self._session.exit_replayed:
            raise exc
        if isinstance(exc, RecordingFormatError) and exc.event is not None:
            event = exc.event
        else:
            event = getattr(self._reader.position, "event", self._reader.position)
        self._session.stop_early(_stop_line(exc, event), exc)

    @property
    def thread(self):
        try:
            tid = self._reader.thread
        except RecordingFormatError as exc:
            return self._ended(exc)
        if tid is None or type(tid) is int or type(tid) is str:
            return tid
        # Logical thread ids are ints or "t.n" strings; anything else (a
        # list: unhashable) is a damaged or forged THREAD_SWITCH.
        from retracesoftware.install.masking import printable
        exc = RecordingFormatError(f"bad thread id {printable(repr(tid))[:40]} in a thread switch")
        exc.reason = f"bad thread id {printable(repr(tid))[:40]} in a thread switch"
        exc.event = getattr(self._reader.position, "event", None)
        return self._ended(exc)

    @property
    def next_kind(self):
        try:
            return self._reader.next_kind
        except RecordingFormatError as exc:
            return self._ended(exc)

    @property
    def events(self):
        return self._reader.events

    @property
    def position(self):
        return self._reader.position

    def __getattr__(self, name):
        return getattr(self._reader, name)



class ReplaySession(Session):
    mode = "replay"

    def __init__(self, reader, preamble, config, *, pdb=False, thread_timeout=10.0, debug=False,
                 check_output=True):
        super().__init__(config)
        self.check_output = check_output
        from retracesoftware.proxy import System
        self.preamble = preamble
        # This interpreter's sys.path before the recorded one replaces it:
        # where the modules the recording's start lacks are imported from.
        self.own_sys_path = [p for p in sys.path if p not in ("", os.getcwd())]
        self.exit_replayed = False
        self._end_watch = False
        self.reader = reader = ReplayReader(reader, self)
        self.debug = debug
        self.pdb = pdb
        self.system = System("replay", reader=reader, thread_id=self.threads.current,
                             deadlock_timeout=thread_timeout)
        self.writer = None
        # A process recorded through the .pth hook cannot see its own exit
        # code at exit (the interpreter has not decided it yet): None was recorded.
        self.exit_code_known = (preamble.get("options") or {}).get("started_by") != "pth-hook"
        #: a child process replayed by a replaying parent (see stop_early)
        self.child_replay = os.environ.get(CHILD_REPLAY_ENV) == "1"

    def main_finished(self, code):
        self.exit_code = code if self.exit_code_known else None

    def _check_output(self) -> bool:
        return self.check_output

    def _reopen_stdin(self, stdin) -> bool:
        options = (self.preamble.get("options") or {}) if isinstance(self.preamble, dict) else {}
        if not options.get("stdin_reopened"):
            return False
        # As recorded, even if this replay's stdin is a terminal (its reads
        # come from the tape); only a missing stdin cannot be reopened.
        try:
            return stdin is not None and stdin.fileno() == 0
        except (OSError, ValueError, AttributeError):
            return False

    def _identity_hashing(self) -> bool:
        options = (self.preamble.get("options") or {}) if isinstance(self.preamble, dict) else {}
        if not options.get("identity_hashing"):
            return False
        if not can_hash_identities():
            _write_stderr("retrace: warning: [no-identity-hash] the recording hashed plain objects "
                             "deterministically, which needs the C++ backend: the iteration order of sets "
                             "of them may differ on this replay\n")
            return False
        return True

    def start(self):
        self._install()
        seq = self.system.sequencer
        if seq is not None:
            raw = getattr(self.reader, "_reader", None)
            if raw is not None and hasattr(type(raw), "next_kind"):
                # The stream reader itself (native with the C++ backend):
                # checked after every turn, so no wrapper in between.
                seq.end_probe = lambda: raw.next_kind is None
                seq.turn.probe = raw     # native hand-overs read the head here
            seq.on_end = self._tape_ended
        install_redaction(self)
        self._patch_thread_excepthook()

    def find_divergence(self, exc):
        """The ReplayDivergence behind *exc*: itself, one in its
        ``__context__``/``__cause__`` chain (a ``with`` block's ``__exit__``
        that failed while it propagated: "release unlocked lock"), or the
        one the engine recorded; None if the replay did not diverge."""
        seen = set()
        while exc is not None and id(exc) not in seen:
            if isinstance(exc, ReplayDivergence):
                return exc
            seen.add(id(exc))
            exc = exc.__cause__ or exc.__context__
        return getattr(self.system, "divergence", None)

    def _patch_thread_excepthook(self):
        """A divergence in a thread other than the main one ends the replay
        with its one report (no thread traceback of ours)."""
        import threading
        original = threading.excepthook

        def excepthook(args, /):
            found = self.find_divergence(args.exc_value) if args.exc_value is not None else None
            if found is None:
                return original(args)
            code = self.divergence(found)
            _real_os._exit(code)
        excepthook.__wrapped__ = original
        excepthook.__name__ = excepthook.__qualname__ = "excepthook"
        self.installer.patch(threading, "excepthook", excepthook)
        # A thread started with _thread.start_new_thread (our logical-thread
        # wrapper runs before threading's own) reports through unraisablehook.
        unraisable = sys.unraisablehook

        def unraisablehook(args, /):
            value = getattr(args, "exc_value", None)
            found = self.find_divergence(value) if value is not None else None
            if found is None or not isinstance(found, ReplayDivergence):
                return unraisable(args)
            code = self.divergence(found)
            _real_os._exit(code)
        unraisablehook.__wrapped__ = unraisable
        self.installer.patch(sys, "unraisablehook", unraisablehook)

    def divergence(self, exc) -> int:
        previous = self.system.gate.swap(DISABLED)   # our report is not the program's output
        try:
            return self._divergence(exc)
        finally:
            self.system.gate.phase = previous

    _report_lock = _real_thread.allocate_lock()
    _reported = False

    def _divergence(self, exc) -> int:
        # One report per replay, whichever thread gets here first (a worker
        # thread's hook and the main thread may both see the divergence);
        # the others wait until it is written (they exit right after).
        with self._report_lock:
            if self._reported:
                return ReplayDivergence.exit_code
            self._reported = True
            return self._write_divergence(exc)

    def _write_divergence(self, exc) -> int:
        try:
            sys.stdout.flush()
        except Exception:
            pass
        from retracesoftware.install.masking import mask
        message = mask(str(exc)).splitlines() or ["replay diverged"]
        _write_stderr(f"retrace: error: {message[0]}\n")
        for line in message[1:]:
            _write_stderr(f"retrace:   {line}\n")
        _flush_stderr()
        self._closed = True
        return ReplayDivergence.exit_code

    def _tape_ended(self):
        """Every event is consumed and the recording has no ``retrace.exit``
        trailer (so far): the recorded process was killed, or its recording
        stopped, about here. Anything it did after this left no trace, so no
        output either. Usually the program soon asks for another event and
        the replay stops there (`ReplayReader`); but it may instead block for
        good in something unrecorded it was blocked in when it died (a pool
        worker its parent killed, waiting on a lock the parent holds). So a
        watchdog stops the replay if the tape is still at its end after a
        grace period (not at once: a process replaying one forked child with
        ``--pid`` switches to the child's tape right after the fork)."""
        if self._closed or self.exit_replayed or self._end_watch:
            return
        from retracesoftware.proxy.protocol import at_end, event_index
        if not getattr(self.children, "spawning", False):
            # Stop at once: after its last event the recorded process did
            # nothing anyone saw (it may have got a real lock another
            # process then waited for: a pool worker its parent killed).
            self.stop_early(_stop_line(EOFError("end of recording"), event_index(self.reader)))
        self._end_watch = True
        seq = self.system.sequencer

        def watch():
            pause = _real_thread.allocate_lock()
            pause.acquire()
            pause.acquire(True, _TAPE_END_GRACE)     # a sleep on a private primitive
            with seq.decisions:
                if self._closed or self.exit_replayed or not at_end(self.reader):
                    self._end_watch = False
                    return
                index = event_index(self.reader)
            self.stop_early(_stop_line(EOFError("end of recording"), index))
        _real_thread.start_new_thread(watch, ())

    def stop_early(self, line, exc=None):
        """The recording ends (or is damaged) here: stop the whole replay,
        from any thread, with one line and exit code 4. The program's own
        atexit handlers do not run: the recorded program never got there.
        Output still in the program's buffers is not flushed either: the
        recorded program had not written it by this event.

        A replayed *child* process (forked or spawned by a replaying parent,
        ``child_replay``) whose recording just ends (the child was killed:
        a pool worker its parent terminated) stops silently: its death is
        part of the recorded run, and the parent's replay goes on."""
        if self.child_replay and (exc is None or isinstance(exc, EOFError)):
            _real_os._exit(RecordingFormatError.exit_code)
        try:
            if self.system is not None:
                self.system.gate.phase = DISABLED   # our line is not the program's output
            if self.debug:
                import traceback
                traceback.print_stack()
                if exc is not None:
                    traceback.print_exception(exc)
            from retracesoftware.install.masking import mask
            _write_stderr(f"retrace: error: {mask(line)}\n")
            _flush_stderr()
        finally:
            _real_os._exit(RecordingFormatError.exit_code)

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            if self.children is not None:
                self.children.wait_all()   # their output lands before the parent's end
            self._exit_call()
            self.exit_replayed = True
            self.system.replay_ended = True   # see installer._INERT_AFTER_REPLAY
            self.system.gate.phase = DISABLED
            if self.thread_support is not None:
                self.thread_support.at_exit()
            self.system.finish()
        except ReplayDivergence as exc:
            code = self.divergence(exc)
            _real_os._exit(code)
        finally:
            try:
                self.reader.close()
            except Exception:
                pass
