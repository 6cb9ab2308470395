"""Record/replay sessions: stream + proxy + installer wired for one process.

This is the only module where ``stream`` and ``proxy`` meet (DESIGN §2):
the stream's StreamWriter/StreamReader already satisfy proxy's Writer/Reader
protocols, so the adapters are the objects themselves, configured here.
"""
from __future__ import annotations

import _io
import _thread
import os
import sys

from retracesoftware.install import output as _output  # noqa: F401  (private refs taken before patching)
from retracesoftware.install import foreign as _foreign
from retracesoftware.install import zone as _zone
from retracesoftware.install.installer import Installer
from retracesoftware.install.threads import ThreadRegistry, ThreadSupport
from retracesoftware.utils import DISABLED, INTERNAL
from retracesoftware.utils.errors import RecordingFormatError, ReplayDivergence
from retracesoftware.utils.isolate import isolate_module

# Private copies taken at import, before any patch (utils/isolate.py).
_real_os = isolate_module(os)
_real_thread = isolate_module(_thread)
#: seconds a replay whose tape has run out (no exit trailer) may stay blocked
_TAPE_END_GRACE = 1.0
_wall_clock = __import__("time").time


def _exit_marker(code):
    """The recording's last call: the program's exit code (checked on
    replay: a different exit code is a divergence) and when it ended."""
    return (code, _wall_clock())
from retracesoftware.install import report  # noqa: E402
_write_stderr = report.write   # the user's stderr
_flush_stderr = sys.stderr.flush


def stream_writer(path, preamble, *, thread_id=None, **options):
    """The recording writer (a proxy ``Writer``)."""
    from retracesoftware.stream import StreamWriter
    return StreamWriter(path, preamble, thread_id=thread_id, **options)


def stream_reader(path):
    """The recording reader (a proxy ``Reader``)."""
    from retracesoftware.stream import StreamReader
    return StreamReader(path)


def open_recording(path, pid=None):
    try:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise RecordingFormatError(f"{path} is empty (0 bytes): the recording was never written "
                                       f"— re-record")
        reader = stream_reader(path)
    except RecordingFormatError:
        raise
    except IsADirectoryError:
        raise RecordingFormatError(f"{path} is a directory, not a recording — give the recording file") from None
    except PermissionError:
        raise RecordingFormatError(f"cannot read recording {path}: permission denied — check its mode") from None
    except OSError as exc:
        raise RecordingFormatError(f"cannot open recording {path}: {exc.strerror} — check the path") from None
    return reader


#: set in the environment of a subprocess replayed by a replaying parent
CHILD_REPLAY_ENV = "RETRACE_CHILD_REPLAY"


def _can_hash_identities() -> bool:
    from retracesoftware import utils
    return utils.CAPABILITIES.has("identity_hashing")


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


#: Tape value of a redacted environment read: this prefix + the variable's name.
REDACTED_MARKER = "\x00retrace:redacted:"
_ENVIRON_GETITEM = "os._Environ.__getitem__"   # the boundary name configs/os.toml gives it


class RedactedValue:
    """What a replayed program gets for an environment variable redacted at
    record time (``--redact NAME``). Reading it is fine; *using* it (str(),
    printing, comparing, hashing, concatenating, any str method, truth value,
    os.fspath, …) stops the replay with one line and exit code 4: the value
    is not in the recording, so nothing computed from it could replay."""

    __slots__ = ("_name", "_session")

    def __init__(self, name, session):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_session", session)

    def _used(self, *args, **kwargs):
        name = object.__getattribute__(self, "_name")
        object.__getattribute__(self, "_session").stop_early(
            f"the program used the environment variable {name}, whose value was redacted from this "
            f"recording (--redact {name}) — replay stopped there; re-record without --redact {name} "
            f"to replay past it")

    def __getattr__(self, attr):
        self._used()

    def __setattr__(self, attr, value):
        self._used()


for _dunder in ("__str__", "__repr__", "__format__", "__bytes__", "__fspath__", "__hash__", "__bool__",
                "__len__", "__iter__", "__contains__", "__getitem__", "__eq__", "__ne__", "__lt__",
                "__le__", "__gt__", "__ge__", "__add__", "__radd__", "__mul__", "__rmul__", "__mod__",
                "__rmod__", "__index__", "__int__", "__float__", "__reduce__", "__reduce_ex__",
                "__copy__", "__deepcopy__", "__call__"):
    setattr(RedactedValue, _dunder, RedactedValue._used)
del _dunder


def _install_redaction(session, redaction=None):
    """Environment values kept out of the recording (docs/RELIABILITY.md,
    "Sharing recordings"), however the program reads them: single reads,
    ``get``/``getenv``, ``copy()``, iteration and ``items()`` all go through
    ``_Environ.__getitem__``, for ``os.environ`` and ``os.environb``.

    Record: the program gets the real value; the tape gets the same call
    (``os._Environ.__getitem__``) with a marker as its result (masking.Redaction).
    Replay: a marker takes the value the variable has in the replaying
    process when set there, else a placeholder of the same length (one
    warning per variable); calls whose arguments carry a placeholder are not
    held to their recorded argument fingerprint."""
    from _thread import get_ident
    from retracesoftware.install import masking
    import os as os_module
    environ = os_module.environ
    environb = getattr(os_module, "environb", None)
    cls = type(environ)
    installed = cls.__dict__["__getitem__"]
    gate = session.system.gate
    fsdecode = os_module.fsdecode
    if session.mode == "record":
        redaction = redaction or masking.Redaction()
        pending = {}
        tape = session.system.patch_function(lambda self, key: pending.pop(get_ident()), _ENVIRON_GETITEM)
        words, prefixes = masking.REDACT_WORDS, masking.REDACT_PREFIXES

        def candidate(name):
            if name in redaction.no_redact:
                return False
            upper = name.upper()
            return (name in redaction.redact or upper.endswith("_URL") or upper.startswith(prefixes)
                    or any(w in upper for w in words))

        def getitem(self, key):
            if (self is environ or self is environb) and gate.phase == INTERNAL:
                name = key if type(key) is str else fsdecode(key) if type(key) is bytes else None
                if name is not None and candidate(name):
                    previous = gate.swap(DISABLED)
                    try:
                        real = installed(self, key)       # unrecorded: the gateway passes through
                    except KeyError:
                        real = None
                    finally:
                        gate.phase = previous
                    marker = redaction.marker(name, real) if real is not None else None
                    if marker is not None:
                        pending[get_ident()] = marker
                        tape(self, key)
                        return real
            return installed(self, key)
    else:
        warned = set()
        placeholders = set()

        def exempt(args, kwargs):
            for a in (*args, *kwargs.values()):
                items = a if type(a) in (tuple, list) else (a,)
                for x in items:
                    if type(x) in (str, bytes, bytearray, memoryview):
                        data = bytes(x) if type(x) is not str else x
                        for p in placeholders:
                            if (p if type(data) is str else p.encode()) in data:
                                return True
            return False

        def getitem(self, key):
            value = installed(self, key)
            if type(value) is str and value.startswith(REDACTED_MARKER) and "\x00" not in value[1:]:
                return RedactedValue(value[len(REDACTED_MARKER):], session)   # recordings before markers
            parsed = masking.parse_marker(value)
            if parsed is None:
                return value
            name, template = parsed
            previous = gate.swap(DISABLED)
            try:
                real = installed(self, key)               # this process's own value
            except KeyError:
                real = None
            finally:
                gate.phase = previous
            if real is None:
                text = masking.fill(template, name)
                placeholders.add(masking.placeholder(name, template.count(masking.SECRET_CHAR)))
                session.system.fingerprint_exempt = exempt
                if name not in warned:
                    warned.add(name)
                    previous = gate.swap(DISABLED)     # our warning is not the program's output
                    try:
                        _write_stderr(f"retrace: warning: the environment variable {masking.printable(name)} was "
                                      f"redacted from this recording and is not set here: the program gets a "
                                      f"placeholder of the same length — set {masking.printable(name)} to replay "
                                      f"with its value\n")
                        _flush_stderr()
                    finally:
                        gate.phase = previous
                return text.encode("utf-8", "surrogateescape") if type(value) is bytes else text
            return real
    session.installer.patch(cls, "__getitem__", getitem)


def install_boundary(system, config, threads):
    """Everything that makes ``system`` the boundary of this interpreter —
    config patches, the import hook, debuggers, threads — shared by the CLI
    sessions and TestRunner. Returns ``(installer, thread_support)``."""
    from retracesoftware.install import debugging, mmaps
    installer = Installer(system, config)
    installer.install()
    try:
        debugging.install(system, installer.patch)
        mmaps.install(system, installer)
        thread_support = ThreadSupport(system, threads)
        thread_support.install(installer)
    except BaseException:
        installer.uninstall()
        raise
    return installer, thread_support


#: the CLI session (record or replay) of this process, once installed
#: (install/pytest_session.py marks test reports on its tape)
current_session = None


class _Session:
    mode = ""

    def __init__(self, config):
        # Our reports go to the stderr the process was started with, even
        # after the program points fd 2 elsewhere (install/report.py).
        report.reserve()
        self.config = config
        self.threads = ThreadRegistry()
        self.system = None
        self.installer = None
        self.thread_support = None
        #: child-process handling, set by the top layer (retracesoftware/children.py):
        #: replay waits for its replay children before the end checks
        self.children = None
        self._closed = False

    def _install(self):
        global current_session
        self.installer, self.thread_support = install_boundary(self.system, self.config, self.threads)
        current_session = self
        # Signal handlers that run in pure Python: SIGNAL events (install/signals.py).
        from retracesoftware.install import signals as _signals
        _signals.install(self)
        if self._identity_hashing():
            # hash() of the program's plain objects (hence the iteration
            # order of sets of them) from per-thread counters, not addresses
            # (docs/THREADS.md): set order replays as recorded.
            from retracesoftware import utils
            utils.set_identity_hashing(True, gate=self.system.gate, thread_id=self.threads.current)
            self.installer.on_uninstall(lambda: utils.set_identity_hashing(False))
            if self._identity_ids():
                self._install_identity_ids()
        if isinstance(getattr(self, "preamble", None), dict) and "zone" in (self.preamble.get("options") or {}):
            # The recorded time zone, and time.tzset() (install/zone.py).
            _zone.install(self, self.installer)
        if self._gc_points_recorded():
            # Garbage collections at recorded points (install/gc_points.py).
            from retracesoftware.install import gc_points
            gc_points.install(self, self.installer)
        if self._output_recorded():
            # Foreign calls through ctypes (install/foreign.py): recorded
            # from the same recordings on as the output check.
            _foreign.install_when_imported(self, self.installer)
            from retracesoftware.install import numpy_support
            numpy_support.install(self.system, self.installer)
            # stdout/stderr writes are output events (install/output.py).
            from retracesoftware.install import output
            self.output = output.install(self, self.installer, check=self._check_output())
        gate = self.system.gate
        previous = gate.swap(INTERNAL)
        try:
            self._program_state_made_before_start()
        finally:
            gate.phase = previous
        if (isinstance(getattr(self, "preamble", None), dict)
                and (self.preamble.get("options") or {}).get("schedule")):
            # Thread switches in pure Python recorded / replayed (install/schedule.py).
            from retracesoftware.install import schedule
            if self.mode == "record":
                schedule.start_record(self)
            else:
                schedule.start_replay(self)

    def _program_state_made_before_start(self):
        """State the program would have made itself but our start-up made
        before recording began, remade as program code (same in record and
        replay, so the tape agrees):

        * ``sys.stdin``: the interpreter opened it before us, so its reads
          were not recorded (a piped-in input replayed from whatever the
          replay's stdin was). When it is not a terminal it is reopened on
          fd 0 through the recorded ``open``, with the same encoding, errors
          and newline handling. (A terminal stays as it is: ``input()`` reads
          a terminal through the C readline, not through ``sys.stdin``.)
        * ``logging._startTime`` (``%(relativeCreated)``): taken from the
          clock when our runtime imported logging; set to the recording's
          start time (in its preamble)."""
        stdin = sys.stdin
        reopen = self._reopen_stdin(stdin)
        if reopen:
            try:
                # The interpreter's own stdin splits lines at "\n" only
                # (universal newlines on Windows).
                new = open(0, "r", encoding=stdin.encoding, errors=stdin.errors,
                           newline=None if os.name == "nt" else "\n", closefd=False)
            except OSError:
                new = None
            if new is not None:
                sys.stdin = new
        logging = sys.modules.get("logging")
        started = (self.preamble.get("started_at") if isinstance(getattr(self, "preamble", None), dict)
                   else None)
        if (logging is not None and isinstance(started, (int, float))
                and isinstance(getattr(logging, "_startTime", None), (int, float))):
            # The preamble's start time: the same on record and replay, and
            # no extra event on the tape.
            logging._startTime = int(started * 1e9) if isinstance(logging._startTime, int) else started

    def _identity_hashing(self) -> bool:
        return False

    output = None

    def _identity_ids(self) -> bool:
        options = (self.preamble.get("options") or {}) if isinstance(getattr(self, "preamble", None), dict) else {}
        return bool(options.get("identity_ids"))

    def _install_identity_ids(self):
        """``id()`` and the default reprs (``<Foo object at 0x…>``, functions,
        generators, coroutines) from per-thread counters, like the hashes
        (utils/README.md): sorting by id and printing default reprs replay.
        Our own runtime keeps the real ``id`` (its tables are keyed by
        addresses): every loaded module of ours gets it as a global."""
        import builtins
        from retracesoftware import utils
        real_id = builtins.id
        for name, module in list(sys.modules.items()):
            if module is not None and (name == "retracesoftware" or name.startswith("retracesoftware.")) \
                    and "id" not in module.__dict__:
                self.installer.patch(module, "id", real_id)
        utils.set_identity_ids(True)
        self.installer.on_uninstall(lambda: utils.set_identity_ids(False))
        self.installer.patch(builtins, "id", utils.identity_id)

    def _output_recorded(self) -> bool:
        options = (self.preamble.get("options") or {}) if isinstance(getattr(self, "preamble", None), dict) else {}
        return bool(options.get("output_recorded"))

    def _check_output(self) -> bool:
        return True

    def _gc_points_recorded(self) -> bool:
        options = (self.preamble.get("options") or {}) if isinstance(getattr(self, "preamble", None), dict) else {}
        return bool(options.get("gc_points"))

    @staticmethod
    def _stdin_reopenable(stdin) -> bool:
        try:
            return (stdin is not None and stdin is sys.__stdin__ and stdin.fileno() == 0
                    and not stdin.isatty() and isinstance(stdin, _io.TextIOWrapper))
        except (OSError, ValueError, AttributeError):
            return False

    def _reopen_stdin(self, stdin) -> bool:
        """Record: whether to (decided here, kept in the preamble); replay:
        what the record did, whatever this process's stdin is."""
        return False

    def run(self, fn, *args):
        """Run the program's code on this thread in the INTERNAL phase."""
        self.system.gate.phase = INTERNAL
        return fn(*args)

    def report(self, reporter, exc):
        """Print the program's uncaught exception as the interpreter would:
        outside the recording (source lines for the traceback are read live)."""
        gate = self.system.gate
        options = (self.preamble.get("options") or {}) if isinstance(getattr(self, "preamble", None), dict) else {}
        if (self.output is not None and not isinstance(exc, (SystemExit, KeyboardInterrupt))
                and options.get("started_by") != "pth-hook"):   # (there the interpreter reported it)
            # The exception's text is output too: checked like a write to
            # stderr (a replay raising the same exception with another
            # message would otherwise differ silently on stderr). Not the
            # traceback's frames: their file names may be remapped.
            previous = gate.swap(DISABLED)
            try:
                import traceback
                text = "".join(traceback.format_exception_only(exc))
            except Exception:
                text = None
            gate.phase = INTERNAL
            try:
                if text is not None and self.system.divergence is None:
                    self.output.emit("stderr", text, lambda: None)
            finally:
                gate.phase = previous
        previous = gate.swap(DISABLED)
        try:
            return reporter(exc)
        finally:
            gate.phase = previous

    exit_code = None

    def main_finished(self, code):
        self.exit_code = code

    def _exit_call(self):
        """Make the EXIT boundary call (retrace.exit) on the main thread."""
        if self.threads.current() != 0:
            return None
        marker = self.system.patch_function(_exit_marker, "retrace.exit")
        gate = self.system.gate
        previous = gate.swap(INTERNAL)
        try:
            points = getattr(self, "gc_points", None)
            if points is not None:     # the last collection (install/gc_points.py)
                points.at_exit()
            return marker(self.exit_code)
        finally:
            gate.phase = previous


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


class RecordSession(_Session):
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
            options["identity_hashing"] = _can_hash_identities()
            options["identity_ids"] = _can_hash_identities()
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
        self.writer = stream_writer(path, preamble, thread_id=self.threads.current, compress=compress,
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
        _install_redaction(self, self.redaction)
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


class ReplaySession(_Session):
    mode = "replay"

    def __init__(self, reader, preamble, config, *, pdb=False, thread_timeout=10.0, debug=False,
                 check_output=True):
        super().__init__(config)
        self.check_output = check_output
        from retracesoftware.proxy import System
        self.preamble = preamble
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
        if not _can_hash_identities():
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
        _install_redaction(self)
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
