"""What a record session and a replay session share: the boundary
installed for one process (stream + proxy + installer wired together),
the program's state remade at start, and the EXIT call at its end.

The sessions themselves: install/record_session.py, install/replay_session.py.
"""
from __future__ import annotations

import _io
import copy as _copy
import os
import sys
from importlib.machinery import ModuleSpec as _ModuleSpec

from retracesoftware.install import output as _output  # noqa: F401  (private refs taken before patching)
from retracesoftware.install import foreign as _foreign
from retracesoftware.install import report
from retracesoftware.install import zone as _zone
from retracesoftware.install.installer import Installer
from retracesoftware.install.thread_support import ThreadRegistry, ThreadSupport
from retracesoftware.utils.startup import resume_collector
from retracesoftware.utils import DISABLED, INTERNAL

_wall_clock = __import__("time").time


def _exit_marker(code):
    """The recording's last call: the program's exit code (checked on
    replay: a different exit code is a divergence) and when it ended."""
    return (code, _wall_clock())


def _module_names():
    """``sys.modules``' names in order (recorded: see `SessionBase._same_modules`)."""
    return tuple(sys.modules)


def _importable_by_replay(name) -> bool:
    """A recorded module name the replay may import itself: the standard
    library's and ours only (a recording is data: it names no code to run)."""
    top = name.partition(".")[0]
    return top in sys.stdlib_module_names or top == "retracesoftware"


def _align_modules(names, own_path=None):
    """Make ``sys.modules`` hold *names* (the recorded ones) in their order;
    modules only this process imported are taken out, ours kept last."""
    import importlib
    modules = sys.modules
    missing = [n for n in names if n not in modules and _importable_by_replay(n)]
    if missing:
        saved = list(sys.path)
        if own_path is not None:
            sys.path[:] = own_path       # not the recorded sys.path: its cwd could shadow a name
        try:
            for name in missing:
                if name not in modules:
                    try:
                        importlib.import_module(name)
                    except BaseException:   # not here (another build): it stays missing
                        pass
        finally:
            sys.path[:] = saved
    ordered = {n: modules[n] for n in names if n in modules}
    # Ours are given back as the same object when imported again (a second
    # copy would have classes and state of its own); any other module only
    # the replay imported (heapq, for the divergence report) is imported
    # anew if the program asks for it, with what it imports in turn, as
    # the recorded program did.
    hidden = {n: m for n, m in modules.items() if n not in ordered
              and (n == "retracesoftware" or n.startswith("retracesoftware."))}
    dropped = [n for n in modules if n not in ordered and n not in hidden]
    _DROPPED.extend(modules[n] for n in dropped)
    if hidden:
        _Hidden.modules.update(hidden)
        if not any(type(f) is _Hidden for f in sys.meta_path):
            sys.meta_path.insert(0, _Hidden())
    # One step, no Python code between.
    modules.clear()
    modules.update(ordered)
    return dropped


_DROPPED: list = []   # kept alive: their importers hold their functions


class _Hidden:
    """Our modules only the replay imported, out of ``sys.modules``: an
    import of one gets the same module object back, not a second copy."""

    modules: dict = {}

    def find_spec(self, name, path=None, target=None):
        module = self.modules.pop(name, None)
        if module is None:
            return None
        spec = getattr(module, "__spec__", None)
        spec = _copy.copy(spec) if spec is not None else _ModuleSpec(name, None)
        spec.loader = _Unhide(module)
        return spec

    def invalidate_caches(self):
        pass


class _Unhide:
    def __init__(self, module):
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        pass


def can_hash_identities() -> bool:
    """Whether this process can hash plain objects by per-thread counters."""
    from retracesoftware import utils
    return utils.CAPABILITIES.has("identity_hashing")


def install_identity_ids(installer) -> None:
    """``id()`` and the default reprs (``<Foo object at 0x…>``, functions,
    generators, coroutines) from per-thread counters, like the hashes
    (utils/README.md), until *installer* uninstalls: sorting by id and
    printing default reprs replay. Needs identity hashing on with a session.
    Our own runtime keeps the real ``id`` (its tables are keyed by
    addresses): every loaded module of ours gets it as a global."""
    import builtins
    from retracesoftware import utils
    real_id = builtins.id
    utils.set_identity_ids(True)
    installer.on_uninstall(lambda: utils.set_identity_ids(False))
    for module in modules_of_ours_without_id():
        installer.patch(module, "id", real_id)
    installer.patch(builtins, "id", utils.identity_id)


def modules_of_ours_without_id() -> list:
    """The loaded modules of our runtime that have no ``id`` global yet
    (they get the real ``id`` while ``builtins.id`` is the identity one)."""
    return [module for name, module in list(sys.modules.items())
            if module is not None and (name == "retracesoftware" or name.startswith("retracesoftware."))
            and "id" not in module.__dict__]


def install_boundary(system, config, threads):
    """Everything that makes ``system`` the boundary of this interpreter —
    config patches, the import hook, debuggers, threads — shared by the CLI
    sessions and TestRunner. Returns ``(installer, thread_support)``."""
    from retracesoftware.install import debugging, mmaps
    installer = Installer(system, config)
    installer.install()
    try:
        debugging.install(system, installer.patch, installer.when_imported)
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


class Session:
    """What record and replay sessions share: one process's boundary,
    installed around the program, and the EXIT call at its end."""

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
        # Before the identity switch: its snapshot then walks only what is
        # alive after gc_points' collection, not our start-up's garbage.
        if self._gc_points_recorded():
            # Garbage collections at recorded points (install/gc_points.py).
            from retracesoftware.install import gc_points
            gc_points.install(self, self.installer)
        # The CLI paused the collector for our start-up (utils/startup.py):
        # on again (gc_points did it after its collection).
        resume_collector()
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
        install_identity_ids(self.installer)

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
        self.program_starts()
        return fn(*args)

    def program_starts(self):
        """The program's own code starts now, on this thread: recording on
        (INTERNAL) and the start's recorded state. `run` calls it; the
        ``.pth`` hook, where the interpreter runs ``__main__`` itself, calls
        it at ``__main__``'s first frame."""
        self.system.gate.phase = INTERNAL
        self._same_modules()

    def _same_modules(self):
        """The program starts with the ``sys.modules`` it was recorded with.

        Record and replay import different modules of ours before the
        program starts (the record session's writer, the replay's reader and
        divergence reports), so a program that walks ``sys.modules`` and
        makes recorded calls per module (hypothesis's pytest plugin resolves
        each module's file: ``Path.resolve`` → ``lstat``) made other calls,
        or the same in another order, on replay. The names, in order, are a
        recorded call (``retrace.modules``); the replay imports the recorded
        modules it lacks, puts ``sys.modules`` in the recorded order and
        takes out what only it imported (ours stay, last)."""
        names = self.system.patch_function(_module_names, "retrace.modules")()
        if self.system.mode != "replay" or not isinstance(names, (tuple, list)):
            return
        gate = self.system.gate
        previous = gate.swap(DISABLED)
        try:
            dropped = _align_modules([n for n in names if type(n) is str], getattr(self, "own_sys_path", None))
            if self.installer is not None:
                self.installer.forget_modules(dropped)
        finally:
            gate.phase = previous

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
        """Make the EXIT boundary call (retrace.exit) on the thread that ends
        the process: the main thread at its end, or whichever thread called
        ``os._exit`` (children.py). The replay makes it on the same logical
        thread, so threads still running there are parked, not replayed past
        the recording's end."""
        seq = getattr(self.system, "sequencer", None)
        stop_others = getattr(self, "stop_other_writers", None)
        if seq is None and stop_others is not None and self.threads.current() != 0:
            stop_others()       # record: the exit call is the recording's last event
        if seq is not None:
            # Replay: the thread that ends the process is the one the end of
            # the tape belongs to; the others (the main thread still running
            # while another calls os._exit) wait there, as they were stopped
            # in the recorded process, instead of asking for more events.
            me = self.threads.current()
            with seq.decisions:
                if seq.main_thread != me:
                    seq.main_thread = me
                    seq.changed()
        marker = self.system.patch_function(_exit_marker, "retrace.exit")
        gate = self.system.gate
        previous = gate.swap(INTERNAL)
        try:
            points = getattr(self, "gc_points", None)
            if points is not None:     # the last collection (install/gc_points.py)
                points.at_exit()
            result = marker(self.exit_code)
            if points is not None:     # after the end: the collector as on record
                points.after_end()
            return result
        finally:
            gate.phase = previous

