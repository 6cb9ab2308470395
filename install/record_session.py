"""The record session: the program runs and its boundary calls are written
to the recording (install/session_base.py has what replay shares)."""
from __future__ import annotations

import _thread
import os
import sys

from retracesoftware.install import report
from retracesoftware.install import zone as _zone
from retracesoftware.install.recording_streams import stream_writer
from retracesoftware.install.redaction import install_redaction
from retracesoftware.install.session_base import Session, can_hash_identities
from retracesoftware.utils import DISABLED

# Taken at import, before any install patches _thread's functions.
_allocate_lock, _get_ident = _thread.allocate_lock, _thread.get_ident

_write_stderr = report.write   # the user's stderr
_flush_stderr = sys.stderr.flush


class RecordingWriter:
    """The StreamWriter as the record engine sees it.

    Writing the recording must never break the program (docs/RELIABILITY.md):
    when a write fails (disk full, file too large, I/O error) the stream
    writer becomes ``failed`` (later events are dropped, the file ends after
    its last whole frame) and raises ``RecordingError`` once, from whichever
    boundary call comes next. Here that error is turned into one warning line
    on stderr; the program goes on, unrecorded from there. Other
    RecordingErrors (a forked child using its parent's writer) pass on.
    """

    __slots__ = ("_writer", "_session", "write", "bind", "unbind", "flush")

    def __init__(self, writer, session):
        from retracesoftware.functional import handle
        from retracesoftware.utils.errors import RecordingError
        self._writer = writer
        self._session = session
        # Native wrappers: nothing added on the hot path until a failure.
        for name in ("write", "bind", "unbind", "flush"):
            object.__setattr__(self, name, handle(getattr(writer, name), RecordingError, self._failed))
        points = getattr(session, "gc_points", None)
        if points is not None:     # collections at boundary calls (install/gc_points.py)
            object.__setattr__(self, "write", points.wrap_write(self.write))

    def _failed(self, exc):
        if not self._writer.failed:
            raise exc
        self._session.write_failed(exc)

    def __getattr__(self, name):
        return getattr(self._writer, name)


class RecordSession(Session):
    mode = "record"

    def __init__(self, path, preamble, config, *, stacks=False, redact=(), no_redact=(), compress=True):
        super().__init__(config)
        from retracesoftware.proxy import System
        from retracesoftware.install.masking import Redaction
        self.path = path
        self.preamble = preamble
        self.redact = tuple(redact)
        #: what this recording keeps out (children get the same: children.py)
        self.redaction = Redaction(redact, no_redact)
        if isinstance(preamble, dict):
            # The replay does these exactly when the record did.
            options = preamble.setdefault("options", {})
            options["identity_hashing"] = can_hash_identities()
            options["identity_ids"] = can_hash_identities()
            options["zone"] = _zone.capture()
            options.setdefault("output_recorded", True)
            options["stdin_reopened"] = self._stdin_reopenable(sys.stdin)
            # RETRACE_NO_GC_POINTS=1: automatic collection as in a plain run
            # (a diagnostic: tests show what the mechanism changes)
            # --schedule records its own switch points and does not place
            # collections yet (the two orders of events are not merged).
            options["gc_points"] = (os.environ.get("RETRACE_NO_GC_POINTS") != "1"
                                    and not options.get("schedule"))
        # cache_thread_id: the writer asks threads.current once per thread
        # (ThreadRegistry tells the stream layer when an id changes).
        self._exiting_thread = None
        self.writer = stream_writer(path, preamble, thread_id=self._writer_thread_id, compress=compress,
                                    cache_thread_id=True)
        if self._gc_points_recorded():
            from retracesoftware.install.gc_points import GcPoints
            self.gc_points = GcPoints("record")
        self._warned = None
        try:
            st = os.stat(path)
            self._file_identity = (os.getpid(), st.st_dev, st.st_ino)
        except OSError:
            self._file_identity = None
        self.system = None
        try:
            recording_writer = RecordingWriter(self.writer, self)
            gate = None
            if isinstance(preamble, dict) and (preamble.get("options") or {}).get("schedule"):
                # --schedule: every write puts the switch to its thread first
                from retracesoftware.install import schedule
                from retracesoftware.utils import Gate
                gate = Gate()
                self.schedule_tracer = schedule.wrap_writer(recording_writer, gate, self.threads.current,
                                                            chaos=bool(preamble["options"].get("chaos")))
            self.system = System("record", writer=recording_writer,
                                 thread_id=self.threads.current, record_stacks=stacks, gate=gate)
            from retracesoftware.install.summaries import summaries
            self.system.summaries = summaries(config)    # ARGS of configs' `summarise`
        except BaseException:
            self.abandon()
            raise

    def _identity_hashing(self) -> bool:
        return bool((self.preamble.get("options") or {}).get("identity_hashing"))

    def _reopen_stdin(self, stdin) -> bool:
        return bool((self.preamble.get("options") or {}).get("stdin_reopened")) and self._stdin_reopenable(stdin)

    def start(self):
        self._install()
        install_redaction(self, self.redaction)
        # Killed by SIGTERM (a pool worker its parent terminates), the
        # process still leaves every event it made (C++ backend).
        arm = getattr(self.writer, "flush_on_sigterm", None)
        if arm is not None:
            try:
                arm()
            except Exception:
                pass

    def abandon(self):
        """Undo everything and delete the recording (start-up failed)."""
        self._closed = True
        if self.installer is not None:
            self.installer.uninstall()
        try:
            self.writer.close()
        finally:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def write_failed(self, exc):
        """One warning per recording file; the program goes on."""
        path = getattr(self.writer, "path", self.path)
        if self._warned == path:
            return
        self._warned = path
        reason = exc.__cause__.strerror if isinstance(exc.__cause__, OSError) else None
        reason = reason or str(exc).rsplit(": ", 1)[-1]
        self._warn(f"cannot write the recording {path} ({reason}) — the program goes on unrecorded; "
                   f"the recording keeps what was written before and is incomplete")

    def _warn(self, line):
        gate = self.system.gate if self.system is not None else None
        previous = gate.swap(DISABLED) if gate is not None else None
        try:
            from retracesoftware.install.masking import mask
            _write_stderr(f"retrace: warning: {mask(line)}\n")
            _flush_stderr()
        except Exception:
            pass
        finally:
            if gate is not None:
                gate.phase = previous

    def _check_file_still_there(self):
        identity = self._file_identity
        if identity is None or identity[0] != os.getpid():
            return
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == identity[1:]
        except OSError:
            same = False
        if not same:
            self._warn(f"the recording {self.path} was removed or replaced while the program ran "
                       f"— nothing of this run was kept")

    def _writer_thread_id(self):
        """The writer's ``thread_id``: the logical id, except that once a
        thread other than the main one began the process's exit
        (``os._exit``), any other thread about to write parks for good (the
        exit ends it): the recording ends with the exit call, as inspect and
        the replay expect, and nothing is done live after it unrecorded."""
        exiting = self._exiting_thread
        if exiting is not None and exiting != _get_ident():
            # The Python writer asks under its lock (the C++ one before
            # taking it): let it go, the write never happens.
            let_go = getattr(self.writer, "let_go", None)
            if let_go is not None:
                let_go()
            stop = _allocate_lock()
            stop.acquire()
            stop.acquire()
        return self.threads.current()

    def stop_other_writers(self):
        from retracesoftware.stream import thread_ids_changed
        self._exiting_thread = _get_ident()
        thread_ids_changed()     # every thread asks _writer_thread_id again

    def close(self):
        if self._closed:
            return
        self._closed = True
        from retracesoftware.utils.errors import RecordingError
        try:
            self._exit_call()
            self.system.gate.phase = DISABLED
            self.system.finish()
        finally:
            self.system.gate.phase = DISABLED
            try:
                self.writer.close()
            except RecordingError as exc:
                if not getattr(self.writer, "failed", False):
                    raise
                self.write_failed(exc)
            self._check_file_still_there()

