"""Child processes under retrace: ``os.fork()`` and subprocesses of this Python.

Design and trade-offs: docs/CHILDREN.md. Installed by the CLI's sessions
(retracesoftware/record_replay.py) after ``session.start()``. In short:

* Every recorded process writes its own recording file. A process's children
  live in the directory ``<its recording>.children/``, named
  ``<parent pid>-<n>.bin`` (n counts the parent's children from 0); a forked
  child shares its parent's directory, a subprocess child (which is a root
  recording of its own) keeps its children in ``<its file>.children/``. So
  every process of a run is reachable from the one recording path, and a
  SIGKILLed parent loses nothing its children wrote.
* fork, record: the real fork happens first; the parent then makes the
  pseudo boundary call ``posix.fork`` whose result is ``(child pid, file
  name)``; the child continues the *same* StreamWriter on its own file
  (``StreamWriter.reopen``: live bindings carried over), with the forking
  thread as logical thread 0.
* fork, replay: the parent reads ``(pid, name)`` from its tape, then really
  forks; the real child continues the same StreamReader on the child's file
  (``StreamReader.reopen``) and returns 0, so what it prints is reproduced
  live. The parent returns the recorded pid. A replayed wait that reaps that
  pid first really waits for the replay child, so the shared stdout gets the
  children's output in the recorded order.
* ``_posixsubprocess.fork_exec`` of ``sys.executable`` (subprocess,
  multiprocessing's spawn helpers): at record the child's argv is rewritten
  to ``sys.executable -m retracesoftware --recording <child file> --
  <argv>``; the boundary call's result is ``(pid, name)``. On replay the
  parent spawns ``sys.executable -m retracesoftware --recording <child
  file>`` with the recorded stdio disposition (inherited stdout/stderr stay
  inherited; pipes and files become /dev/null: the parent's pipe contents
  come from its own tape). Other executables stay pure data: nothing is
  spawned on replay.
* ``os._exit`` closes the recording (or checks the replay's end) first.
"""
from __future__ import annotations

import os
import posix
import sys
import time

import _posixsubprocess
from _thread import get_ident as _get_ident

from retracesoftware.__main__ import recorded_hash_seed as _recorded_hash_seed  # (imported at start, both runs)
from retracesoftware.preamble import CHILD_NAME
from retracesoftware.utils import DISABLED, INTERNAL
from retracesoftware.utils.errors import RecordingFormatError
from retracesoftware.utils.isolate import isolate_module

# Private copies taken at import, before any patch (utils/isolate.py).
_real_posix = isolate_module(posix)
_real_posixsubprocess = isolate_module(_posixsubprocess)
_real_os = isolate_module(os)
_real_time = isolate_module(time)
_real_posix_spawn = getattr(_real_posix, "posix_spawn", None)
_POSIX_SPAWN_DUP2 = getattr(posix, "POSIX_SPAWN_DUP2", None)
#: the exec functions every os.exec* ends in
EXECS = ("execv", "execve")
_real_forkpty = getattr(_real_posix, "forkpty", None)
_real_login_tty = getattr(_real_posix, "login_tty", None)   # PYVERSIONS: 3.11+
# Our own file-system checks never go through the program's patches of os
# (blockbuster wraps os.stat to report blocking calls): private copies.
from retracesoftware.install.isolation import isolated as _isolated  # noqa: E402
_makedirs = _isolated(os.makedirs, path=_real_os.path, mkdir=posix.mkdir)
_isdir = _real_os.path.isdir
_exists = _real_os.path.exists
_abspath = _real_os.path.abspath
_samefile = _real_os.path.samefile
_realpath = _real_os.path.realpath
from retracesoftware.install.report import write as _write_stderr  # the user's stderr  # noqa: E402

_POPEN = []


def _popen_class():
    """``subprocess.Popen`` whose methods see our private ``os``: spawning
    a child's replay is our work, not the program's (a program's patch of
    ``os.open``/``os.read`` must not see it)."""
    if not _POPEN:
        import subprocess
        from retracesoftware.install.isolation import isolated_class
        _POPEN.append(isolated_class(subprocess.Popen, "Popen", os=_real_os))
    return _POPEN[0]


SUFFIX = ".bin"
DIR_SUFFIX = ".children"

#: The wait functions whose recorded results name a reaped child.
WAITS = ("wait", "waitpid", "wait3", "wait4", "waitid")


def children_dir(recording_path: str) -> str:
    return _abspath(recording_path) + DIR_SUFFIX


def remove_stale_children(recording_path: str) -> None:
    """A new recording at *path* replaces an old one's children too."""
    d = children_dir(recording_path)
    if _isdir(d):
        import shutil    # only then: with bz2, lzma and fnmatch it is ~1.5 ms of a start
        shutil.rmtree(d, ignore_errors=True)


def _is_this_python(executable_list) -> bool:
    for candidate in executable_list or ():
        path = _real_os.fsdecode(candidate)
        if not _exists(path):
            continue
        try:
            return _samefile(path, sys.executable) or _realpath(path) == _realpath(sys.executable)
        except OSError:
            return False
    return False


#: record_replay._HASHSEED_MARK (not imported: record_replay imports this module)
_HASHSEED_MARK = "RETRACE_PINNED_HASHSEED"


def _fresh_seed() -> str:
    """A hash seed for a child, 1 .. 2**32-1 (as __main__ picks its own)."""
    return str(int.from_bytes(_real_posix.urandom(8), "little") % (2**32 - 1) + 1)


def _seeded_env_list(env_list):
    """fork_exec's environment (b"K=V" entries; None: this process's) for a
    child that records or replays itself, with a hash seed of ours and our
    mark: its CLI then does not restart itself to pin one (one interpreter
    start, ~10 ms, per child), and its program never sees them
    (record_replay.forget_our_hash_seed). A seed the environment already
    sets is kept."""
    entries = [k + b"=" + v for k, v in _real_os.environb.items()] if env_list is None else list(env_list)
    if any(e.startswith(b"PYTHONHASHSEED=") for e in entries):
        return env_list
    seed = _fresh_seed().encode()
    mark = _HASHSEED_MARK.encode()
    return [e for e in entries if not e.startswith(mark + b"=")] + [b"PYTHONHASHSEED=" + seed, mark + b"=" + seed]


def _seeded_env(env):
    """posix_spawn's environment mapping, the same way as _seeded_env_list."""
    if env is None or any(k in (b"PYTHONHASHSEED", "PYTHONHASHSEED") for k in env):
        return env
    seed = _fresh_seed()
    env = {k: v for k, v in env.items() if k not in (_HASHSEED_MARK, _HASHSEED_MARK.encode())}
    env["PYTHONHASHSEED"] = env[_HASHSEED_MARK] = seed
    return env


def _no_events(path) -> bool:
    """The recording at *path* is a whole preamble and nothing after it."""
    from retracesoftware.stream import StreamReader
    try:
        reader = StreamReader(path)
    except Exception:
        return False
    try:
        return reader.next_kind is None
    except Exception:
        return False
    finally:
        reader.close()


def _recordable_argv(args) -> tuple[list[str], list[str]] | None:
    """``(interpreter options, argv)`` for a child of this Python to record
    itself, or None if the CLI could not run it. The options (multiprocessing
    passes ``-B`` and the like, see subprocess._args_from_interpreter_flags)
    go to the interpreter that runs retrace too, so they are in effect
    there. -E/-I children are not recorded: they would ignore the
    PYTHONHASHSEED the CLI pins."""
    from retracesoftware.runner import UsageError, parse_command, split_interpreter_options
    words = [_real_os.fsdecode(a) for a in args]
    if not words:
        return None
    try:
        options, rest = split_interpreter_options(words[1:], check=False)
        if any(o[1:2] not in ("W", "X") and ("E" in o or "I" in o) for o in options):
            return None
        parse_command([sys.executable, *rest])
    except UsageError:
        return None
    return options, [sys.executable, *options, *rest]


def _replay_command(args, path) -> list[str]:
    """The command replaying a child recorded from argv *args* (the same
    interpreter options as on record)."""
    from retracesoftware.runner import UsageError, split_interpreter_options
    try:
        options = split_interpreter_options([_real_os.fsdecode(a) for a in args[1:]], check=False)[0] if args else []
    except UsageError:
        options = []
    return [sys.executable, *options, "-m", "retracesoftware", "--recording", path]


class ChildProcesses:
    """Fork and subprocess handling for one session (record or replay)."""

    def __init__(self, session, recording_path, *, pid_chain=None, trust=False):
        self.session = session
        #: replay --trust: children running recorded -c code may run too
        self.trust = trust
        self.system = session.system
        self.mode = session.mode
        self.dir = children_dir(recording_path)
        self.pid = _real_posix.getpid()
        self._count = 0
        self._outcomes = {}
        #: replay: recorded pid -> ("fork", real pid) | ("spawn", Popen)
        self._live = {}
        #: replay --pid: names of the fork children still to become, in order
        self.chain = list(pid_chain) if pid_chain is not None else None
        self._saved_fds = None
        #: replay: inside a fork/spawn whose replay child is still to be made
        #: (the tape may end with that event: the session must not stop first)
        self.spawning = False
        self._fork_call = self.system.patch_function(self._fork_outcome, "posix.fork")
        self._fork_exec_call = self.system.patch_function(self._record_fork_exec, "_posixsubprocess.fork_exec")
        self._posix_spawn_call = self.system.patch_function(self._record_posix_spawn, "posix.posix_spawn")
        # The child's side of a pty fork: a boundary call (it acts on the
        # controlling terminal and fds 0-2; on replay the descriptor is not real).
        #: the file this process records to / replays from (its descriptor is ours)
        self._tape = _realpath(recording_path)
        self._exec_calls = {name: self.system.patch_function(self._exec_outcome, f"posix.{name}")
                            for name in EXECS if getattr(_real_posix, name, None) is not None}
        self._closerange_call = self.system.patch_function(self._closerange_sparing_ours, "posix.closerange")
        self._login_tty_call = (self.system.patch_function(_real_posix.login_tty, "posix.login_tty")
                                if _real_login_tty is not None else None)

    # ------------------------------------------------------------ install
    def install(self, installer):
        fork = self._record_fork if self.mode == "record" else self._replay_fork
        self._substitute(installer, posix, "fork", _substitute_named(fork, "fork", "posix"))
        self._substitute(installer, posix, "_exit", _substitute_named(self._exit, "_exit", "posix"))
        for name in self._exec_calls:
            self._substitute(installer, posix, name, _substitute_named(self._exec(name), name, "posix"))
        if getattr(_real_posix, "closerange", None) is not None:
            self._substitute(installer, posix, "closerange",
                             _substitute_named(self._closerange, "closerange", "posix"))
        if _real_forkpty is not None and _real_login_tty is not None:
            # Every fork goes through the fork above: os.forkpty (pty.fork,
            # pexpect/ptyprocess) is made of openpty, that fork and login_tty,
            # as glibc makes it (its C fork would bypass ours: the child would
            # write into the parent's recording).
            self._openpty = posix.openpty          # the recorded gateway
            self._close = posix.close              # output.py's fd bookkeeping, recorded
            self._fork = posix.fork                # the substitute installed just above
            self._substitute(installer, posix, "login_tty",
                             _substitute_named(self._login_tty, "login_tty", "posix"))
            self._substitute(installer, posix, "forkpty",
                             _substitute_named(self._forkpty, "forkpty", "posix"))
        self._substitute(installer, _posixsubprocess, "fork_exec",
                         _substitute_named(self._fork_exec, "fork_exec", "_posixsubprocess"))
        if _real_posix_spawn is not None:
            # PYVERSIONS: 3.13's subprocess spawns with posix_spawn when it can close fds.
            self._substitute(installer, posix, "posix_spawn",
                             _substitute_named(self._posix_spawn, "posix_spawn", "posix"))
        if self.mode == "replay":
            for name in WAITS:
                patched = getattr(posix, name, None)
                if patched is not None:
                    self._substitute(installer, posix, name, self._replayed_wait(patched, name))
        if self.chain:
            self._mute()

    @staticmethod
    def _substitute(installer, module, attr, new):
        old = module.__dict__[attr]
        installer.patch(module, attr, new)
        installer.replace_everywhere({id(old): (old, new)})

    def _next_name(self) -> str:
        name = f"{self.pid}-{self._count}{SUFFIX}"
        self._count += 1
        return name

    def _path(self, name) -> str:
        # Names come from the tape on replay: only PID-N.bin inside our
        # children folder, never a path of the recording's choosing.
        if type(name) is not str or not CHILD_NAME.match(name):
            from retracesoftware.install.masking import printable
            line = (f"bad recording: child recording name {printable(repr(name))[:60]} is not PID-N.bin "
                    f"inside {printable(self.dir)} — the file was altered; re-record")
            if self.mode == "replay":
                self.session.stop_early(line, RecordingFormatError(line))
            raise RecordingFormatError(line)
        return os.path.join(self.dir, name)

    def _redaction_args(self) -> list:
        """A recorded child keeps out what this recording keeps out."""
        redaction = getattr(self.session, "redaction", None)
        return redaction.cli_args() if redaction is not None else []

    def _vouched(self, argv, path) -> bool:
        """Replay: may the child recording at *path* run its recorded ``-c``
        code? Yes under --trust, or when the replaying parent (whose own
        code is checked) passes exactly that code now."""
        if self.trust:
            return True
        from retracesoftware.runner import UsageError, parse_command
        found = _recordable_argv(argv)
        if found is None:
            return False
        try:
            _, live = parse_command(found[1][:1] + found[1][1 + len(found[0]):])
        except UsageError:
            return False
        pre = read_preamble(path) or {}
        recorded = pre.get("target") if isinstance(pre.get("target"), dict) else {}
        return live.kind == "code" and recorded.get("kind") == "code" and recorded.get("value") == live.value

    # --------------------------------------------------------------- fork
    def _fork_outcome(self):
        outcome = self._outcomes.pop(_get_ident())
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _exec_outcome(self, *args, **kwargs):
        """A recorded exec's outcome: only a failed one returns (its error)."""
        outcome = self._outcomes.pop(_get_ident())
        if outcome is not None:
            raise outcome

    def _quiet_fork(self):
        """The real fork, without 3.12's multi-threaded-fork warning when the
        only other threads are our stream's (the program's own would warn
        without retrace too)."""
        import threading
        if threading.active_count() > 1:
            return _real_posix.fork()
        import warnings
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This process .* is multi-threaded",
                                    category=DeprecationWarning)  # PYVERSIONS: 3.12+
            return _real_posix.fork()

    def _record_fork(self):
        gate = self.system.gate
        if gate.phase != INTERNAL:
            return _real_posix.fork()
        name = self._next_name()
        gate.phase = DISABLED
        try:
            pid = self._quiet_fork()
        except OSError as exc:
            gate.phase = INTERNAL
            self._outcomes[_get_ident()] = exc
            return self._fork_call()
        if pid == 0:
            try:
                self._become_record_child(name)
            finally:
                gate.phase = INTERNAL
            return 0
        gate.phase = INTERNAL
        self._outcomes[_get_ident()] = (pid, name)
        result = self._fork_call()[0]
        # The child's replay starts by replaying this tape up to here: get it
        # on disk now, so a parent killed later does not take it along.
        self.session.writer.flush()
        return result

    def _forkpty(self):
        """``os.forkpty()`` as glibc does it, from the recorded parts: the
        pty pair (a recorded call), our fork, and in the child the master
        closed and ``login_tty`` on the slave; the parent closes the slave."""
        if self.system.gate.phase != INTERNAL:
            return _real_forkpty()
        master, slave = self._openpty()
        try:
            pid = self._fork()
        except BaseException:
            self._close(master)
            self._close(slave)
            raise
        if pid == 0:
            try:
                self._close(master)
                self._login_tty(slave)
            except BaseException:
                self._exit(1)   # what glibc's forkpty child does when login_tty fails
            return 0, master
        self._close(slave)
        return pid, master

    def _login_tty(self, fd):
        """``os.login_tty(fd)``: a recorded call; fds 0-2 become the terminal,
        so what the program writes there is no longer the process's own
        stdout/stderr (on replay those descriptors point at /dev/null, as
        after a dup2: what reached the terminal is the pty master's data)."""
        if self.system.gate.phase != INTERNAL:
            return _real_login_tty(fd)
        result = self._login_tty_call(fd)
        output = getattr(self.session, "output", None)
        if output is not None:
            output.std_fds.pop(fd, None)
            for std in (0, 1, 2):
                output.std_fds.pop(std, None)
        if self.mode == "replay":
            gate = self.system.gate
            previous = gate.swap(DISABLED)
            try:
                null = _real_posix.open(os.devnull, os.O_RDWR)
                for std in (0, 1, 2):
                    _real_posix.dup2(null, std)
                _real_posix.close(null)
            except OSError:
                pass
            finally:
                gate.phase = previous
        return result

    # ---------------------------------------------------------------- exec
    def _exec(self, name):
        """``os.execv``/``execve`` (every ``os.exec*``): the process becomes
        another program, so its recording ends here. Record: everything
        buffered is written first (exec drops the writer's buffer), then the
        real exec; only a failure is recorded (the call's error). Replay: a
        tape that ends here is a recorded exec that succeeded: the replay of
        this process ends (quietly, exit 0: nothing else ran in it; what the
        other program did is its parent's data); else the recorded error is
        raised. On the tape: the call with result None where the exec starts,
        and the same call again with its error if it failed.
        The other program never runs on replay."""
        real = getattr(_real_posix, name)
        call = self._exec_calls[name]

        def exec_(*args, **kwargs):
            gate = self.system.gate
            if gate.phase != INTERNAL:
                return real(*args, **kwargs)
            ident = _get_ident()
            if self.mode == "record":
                self._outcomes[ident] = None
                call(*args, **kwargs)        # the exec starts here (result None)
                try:
                    self.session.writer.flush()
                except Exception:
                    pass   # a failed writer says so itself
                gate.phase = DISABLED
                try:
                    real(*args, **kwargs)
                    outcome = RuntimeError("exec returned")   # never: a working exec does not return
                except BaseException as exc:
                    outcome = exc
                finally:
                    gate.phase = INTERNAL
                self._outcomes[ident] = outcome
                return call(*args, **kwargs)  # the same call again: its error
            from retracesoftware.proxy.protocol import at_end
            self.spawning = True              # the tape may end with this event
            try:
                call(*args, **kwargs)
                if at_end(self.system.reader):
                    gate.phase = DISABLED
                    _real_posix._exit(0)
            finally:
                self.spawning = False
            return call(*args, **kwargs)
        return exec_

    # ---------------------------------------------------------- closerange
    def _closerange(self, fd_low, fd_high, /):
        if self.system.gate.phase != INTERNAL:
            return _real_posix.closerange(fd_low, fd_high)
        return self._closerange_call(fd_low, fd_high)

    def _closerange_sparing_ours(self, fd_low, fd_high, /):
        """The real ``closerange`` at record, around our runtime's own
        descriptors (the recording file, our copy of the user's stderr, the
        output check's saved stdio): a child about to exec closes everything
        it inherited (ptyprocess, daemonisers) and would cut its recording
        short. The program never knew those descriptors."""
        low = fd_low
        for fd in sorted(f for f in self._private_fds() if fd_low <= f < fd_high):
            if low < fd:
                _real_posix.closerange(low, fd)
            low = fd + 1
        if low < fd_high:
            _real_posix.closerange(low, fd_high)

    def _private_fds(self) -> set:
        from retracesoftware.install import report
        fds = set()
        if report.fd() is not None:
            fds.add(report.fd())
        output = getattr(self.session, "output", None)
        if output is not None and hasattr(output, "own_fds"):
            fds.update(output.own_fds())
        # The tape's descriptor: the stream keeps it private; find it by its file.
        try:
            tape = self._tape
            for entry in _real_posix.listdir("/proc/self/fd"):
                try:
                    if _real_posix.readlink(f"/proc/self/fd/{entry}") == tape:
                        fds.add(int(entry))
                except (OSError, ValueError):
                    continue
        except OSError:
            pass
        return fds

    def _become_record_child(self, name):
        session = self.session
        parent = self.pid
        session.threads.reset_after_fork()
        self.pid = _real_posix.getpid()
        self._count = 0
        self._live = {}
        pre = dict(session.preamble)
        pre["pid"] = self.pid
        pre["started_at"] = _real_time.time()
        pre["process"] = {"kind": "fork", "parent_pid": parent, "name": name}
        _makedirs(self.dir, exist_ok=True)
        self._tape = _realpath(self._path(name))
        session.writer.reopen(self._tape, pre)
        self._identify_main()

    def _identify_main(self):
        """The surviving thread is the child's main thread: its (ident,
        native id) are recorded first thing on the child's tape, and on
        replay program code sees those (as for the main thread at start)."""
        support = self.session.thread_support
        if support is None:
            return
        gate = self.system.gate
        previous = gate.swap(INTERNAL)
        try:
            recorded = tuple(support.identify())
        finally:
            gate.phase = previous
        self.session.threads.idents[0] = recorded
        if self.mode == "replay":
            support.adopt_main_ident(recorded)

    def _replay_fork(self):
        gate = self.system.gate
        if gate.phase != INTERNAL:
            return _real_posix.fork()
        self.spawning = True
        try:
            return self._replay_fork_now()
        finally:
            self.spawning = False

    def _replay_fork_now(self):
        gate = self.system.gate
        pid, name = self._fork_call()
        self._path(name)   # a name from the tape: checked before anything uses it
        if self.chain is not None:
            # --pid: only the chain to the chosen child is followed, in this process.
            if self.chain and self.chain[0] == name:
                self.chain.pop(0)
                self._become_replay_child(name)
                if not self.chain:
                    self._unmute()
                return 0
            return pid
        gate.phase = DISABLED
        try:
            real = self._quiet_fork()
        finally:
            gate.phase = INTERNAL
        if real == 0:
            self._become_replay_child(name)
            return 0
        self._live[pid] = ("fork", real)
        return pid

    def _become_replay_child(self, name):
        gate = self.system.gate
        previous = gate.swap(DISABLED)
        try:
            self.session.threads.reset_after_fork()
            self.session.child_replay = True
            self.pid = _real_posix.getpid()
            self._count = 0
            self._live = {}
            try:
                self._tape = _realpath(self._path(name))
                self.system.reader.reopen(self._tape)
                signals = getattr(self.session, "signal_replay", None)
                if signals is not None:
                    signals.forked()        # the child's SIGNALs are indexed on its own tape
            except (OSError, RecordingFormatError) as exc:
                if isinstance(exc, RecordingFormatError) and _no_events(self._path(name)):
                    # Killed between creating its recording and writing the
                    # bindings it inherited (a pool worker terminated as it
                    # started): it did nothing a replay could show, and the
                    # parent's tape holds what the parent saw of it.
                    _real_posix._exit(0)
                what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                _write_stderr(f"retrace: error: cannot replay forked child {name}: {what} — "
                              f"the recording's children directory {self.dir} is incomplete\n")
                _real_posix._exit(RecordingFormatError.exit_code)
        finally:
            gate.phase = previous
        self._identify_main()

    # ---------------------------------------------------------- subprocess
    def _record_fork_exec(self, *args):
        """The real call at record (runs EXTERNAL inside the boundary call):
        a child running this Python is made to record itself."""
        args = list(args)
        name = None
        if _is_this_python(args[1]):
            found = _recordable_argv(args[0])
            if found is not None:
                options, argv = found
                name = self._next_name()
                _makedirs(self.dir, exist_ok=True)
                args[0] = [sys.executable, *options, "-m", "retracesoftware", "--recording", self._path(name),
                           *self._redaction_args(), "--", *argv]
                args[1] = [_real_os.fsencode(sys.executable)]
                args[5] = _seeded_env_list(args[5])
        return (_real_posixsubprocess.fork_exec(*args), name)

    def _fork_exec(self, *args):
        if self.system.gate.phase != INTERNAL:
            return _real_posixsubprocess.fork_exec(*args)
        self.spawning = self.mode == "replay"
        try:
            pid, name = self._fork_exec_call(*args)
            if name is not None and self.mode == "replay" and self.chain is None:
                self._spawn_replay(pid, name, args, args[0])
        finally:
            self.spawning = False
        return pid

    def _record_posix_spawn(self, path, argv, env, **kwargs):
        """posix_spawn at record: a child running this Python records itself."""
        name = None
        if _is_this_python([path]):
            found = _recordable_argv(argv)
            if found is not None:
                options, words = found
                name = self._next_name()
                _makedirs(self.dir, exist_ok=True)
                path = sys.executable
                argv = [sys.executable, *options, "-m", "retracesoftware", "--recording", self._path(name),
                        *self._redaction_args(), "--", *words]
                env = _seeded_env(env)
        return (_real_posix_spawn(path, argv, env, **kwargs), name)

    def _posix_spawn(self, path, argv, env, **kwargs):
        if self.system.gate.phase != INTERNAL:
            return _real_posix_spawn(path, argv, env, **kwargs)
        self.spawning = self.mode == "replay"
        try:
            return self._posix_spawn_replayed(path, argv, env, **kwargs)
        finally:
            self.spawning = False

    def _posix_spawn_replayed(self, path, argv, env, **kwargs):
        pid, name = self._posix_spawn_call(path, argv, env, **kwargs)
        if name is not None and self.mode == "replay" and self.chain is None:
            # The child's stdio as fork_exec would name it: -1 = inherited.
            fds = {0: -1, 1: -1, 2: -1}
            for action in kwargs.get("file_actions") or ():
                if action and action[0] == _POSIX_SPAWN_DUP2 and action[2] in fds:
                    fds[action[2]] = action[1]
            stdio = [None] * 12
            stdio[6], stdio[9], stdio[11] = fds[0], fds[1], fds[2]
            self._spawn_replay(pid, name, stdio, argv)
        return pid

    def _spawn_replay(self, pid, name, args, argv):
        from retracesoftware.stream import stdlib_module
        subprocess = stdlib_module("subprocess")   # never from the recorded sys.path
        gate = self.system.gate
        previous = gate.swap(DISABLED)
        try:
            path = self._path(name)
            problem = _unreplayable(path)
            # No file at all while its siblings are there: the child was
            # killed before its recording began (a pool worker terminated
            # while starting up). It did nothing a replay could show.
            killed_at_start = problem is not None and not _exists(path) and _isdir(self.dir)
        finally:
            gate.phase = previous
        if killed_at_start:
            return
        if problem is not None:
            # The parent's replay does not depend on it (what the parent got
            # from the child is on the parent's tape); say what is missing.
            previous = gate.swap(DISABLED)   # our warning is not the program's output
            try:
                _write_stderr(f"retrace: warning: child process {pid} is not replayed: {problem}\n")
            finally:
                gate.phase = previous
            return
        p2cread, c2pwrite, errwrite = args[6], args[9], args[11]

        def disposition(fd, own):
            if fd == -1:
                return None              # inherited from the parent
            if fd in (0, 1, 2):
                return fd                # the parent's own stdio
            return subprocess.DEVNULL   # a pipe or file: its data is the parent's, on its tape
        stdin = disposition(p2cread, 0)
        stdout = disposition(c2pwrite, 1)
        stderr = subprocess.STDOUT if errwrite != -1 and errwrite == c2pwrite else disposition(errwrite, 2)
        cmd = _replay_command(argv, self._path(name))
        gate = self.system.gate
        previous = gate.swap(DISABLED)
        try:
            if self._vouched(argv, self._path(name)):
                cmd.append("--trust")
            from retracesoftware.install.replay_session import CHILD_REPLAY_ENV
            env = dict(os.environ)
            env[CHILD_REPLAY_ENV] = "1"
            # The child's recorded hash seed, and our mark: its replay does
            # not restart itself to pin it (one interpreter start per child).
            seed = str(_recorded_hash_seed(self._path(name)))
            # (data from the file: only a seed the interpreter accepts; else
            # the child's replay restarts itself and checks it, as before)
            if seed.isdigit() and int(seed) <= 4294967295:
                env["PYTHONHASHSEED"] = env[_HASHSEED_MARK] = seed
            self._live[pid] = ("spawn", _popen_class()(cmd, stdin=stdin, stdout=stdout, stderr=stderr,
                                                         env=env))
        finally:
            gate.phase = previous

    # --------------------------------------------------------------- waits
    def _replayed_wait(self, patched, name):
        wait_real = self.wait_for

        def wait(*args, **kwargs):
            result = patched(*args, **kwargs)
            expected = None
            if name == "waitid":
                pid = getattr(result, "si_pid", 0) if result is not None else 0
            else:
                pid = result[0] if isinstance(result, tuple) and result else 0
                if pid and len(result) > 1 and isinstance(result[1], int):
                    try:
                        expected = os.waitstatus_to_exitcode(result[1])
                    except ValueError:
                        expected = None
            if pid:
                wait_real(pid, expected)
            return result
        wait.__name__ = wait.__qualname__ = name
        wait.__module__ = "posix"
        wait.__wrapped__ = patched
        return wait

    def wait_for(self, recorded_pid, expected=None):
        """Replay: the recorded child *recorded_pid* was reaped here; wait
        for its replay process to end too. *expected*: the exit code the
        recording says it had."""
        entry = self._live.pop(recorded_pid, None)
        if entry is None:
            return
        gate = self.system.gate
        previous = gate.swap(DISABLED)
        code = None
        try:
            kind, proc = entry
            if kind == "spawn":
                code = proc.wait()
            else:
                while True:
                    try:
                        _, status = _real_posix.waitpid(proc, 0)
                        code = os.waitstatus_to_exitcode(status)
                        break
                    except ChildProcessError:
                        break
                    except InterruptedError:
                        continue
        finally:
            gate.phase = previous
        if code == 3 and expected is not None and expected != 3:
            # The child's replay diverged (its lines are above), where the
            # recorded child exited with another code.
            self._child_diverged(recorded_pid)

    def _child_diverged(self, recorded_pid):
        """A replayed child that diverged makes the parent's replay diverge
        too: what the parent did with the child's results is not the
        recorded run any more."""
        system = self.system
        if system.divergence is not None:
            return
        from retracesoftware.proxy.protocol import event_index
        reader = getattr(self.session, "reader", None)
        index = event_index(reader) if reader is not None else None
        previous = system.gate.swap(DISABLED)
        try:
            div = system.diverge(index, f"child process {recorded_pid} to replay as recorded",
                                  f"its replay diverged (see its retrace: lines)")
        finally:
            system.gate.phase = previous
        if previous == INTERNAL:
            raise div

    def wait_all(self):
        """Replay: the program ends; its replay children end before it."""
        for pid in list(self._live):
            self.wait_for(pid)

    # ---------------------------------------------------------------- exit
    def _exit(self, code):
        session = self.session
        if self.system.gate.phase == INTERNAL and session.system is self.system:
            try:
                session.main_finished(code)
                session.close()
            except BaseException as exc:  # never stop the program from exiting
                _write_stderr(f"retrace: error: while closing the recording at os._exit: {exc}\n")
        _real_posix._exit(code)

    # ------------------------------------------------------- --pid muting
    def _mute(self):
        """--pid: the ancestors' output is not the chosen child's."""
        null = _real_posix.open(os.devnull, os.O_WRONLY)
        self._saved_fds = (_real_posix.dup(1), _real_posix.dup(2))
        _real_posix.dup2(null, 1)
        _real_posix.dup2(null, 2)
        _real_posix.close(null)

    def _unmute(self):
        if self._saved_fds is None:
            return
        out, err = self._saved_fds
        self._saved_fds = None
        _real_posix.dup2(out, 1)
        _real_posix.dup2(err, 2)
        _real_posix.close(out)
        _real_posix.close(err)


def install(session, recording_path, *, pid_chain=None, trust=False):
    """Child-process handling for a started session (record or replay)."""
    session.children = ChildProcesses(session, recording_path, pid_chain=pid_chain, trust=trust)
    session.children.install(session.installer)
    return session.children


def _substitute_named(fn, name, module):
    def substitute(*args, **kwargs):
        return fn(*args, **kwargs)
    substitute.__name__ = substitute.__qualname__ = name
    substitute.__module__ = module
    substitute.__wrapped__ = fn
    return substitute


def _unreplayable(path):
    """Why the child recording at *path* cannot be replayed here, or None."""
    from retracesoftware import preamble as preamble_mod
    from retracesoftware.utils.errors import VersionMismatch
    pre = read_preamble(path)
    if pre is None:
        return f"its recording {path} is missing or damaged"
    try:
        preamble_mod.validate(pre)
        preamble_mod.check(pre, config_digest=None, force=False)
        # its program: the script it would run is the recorded one
        preamble_mod.check_program(pre, preamble_mod.resolve_target(pre), force=False)
    except (VersionMismatch, RecordingFormatError) as exc:
        return str(exc).split(" — ")[0]
    return None


# ------------------------------------------------------------- lookup
def read_preamble(path):
    """The preamble dict of the recording at *path*, or None when it cannot
    be read (missing, not a recording, bad format)."""
    from retracesoftware.stream import StreamReader
    try:
        with StreamReader(path) as reader:
            pre = reader.preamble
    except (OSError, RecordingFormatError):
        return None
    return pre if isinstance(pre, dict) else None


def processes(recording_path: str, *, _parent_pid=None, _depth=0):
    """Every child recording reachable from *recording_path*, depth first:
    dicts with path, name, pid, parent_pid, kind ("fork" / "subprocess"),
    depth, preamble (None when unreadable)."""
    d = children_dir(recording_path)
    if not _isdir(d) or _depth > 64:
        return []
    out = []
    for name in sorted(_real_posix.listdir(d), key=_name_order):
        if not name.endswith(SUFFIX):
            continue
        path = os.path.join(d, name)
        pre = read_preamble(path)
        proc = (pre or {}).get("process") or {}
        kind = "fork" if proc.get("kind") == "fork" else "subprocess"
        try:
            parent_pid = int(name.split("-", 1)[0])
        except ValueError:
            parent_pid = None
        entry = {"path": path, "name": name, "pid": (pre or {}).get("pid"),
                 "parent_pid": parent_pid, "kind": kind, "depth": _depth, "preamble": pre}
        out.append(entry)
        if kind == "subprocess":
            out.extend(processes(path, _depth=_depth + 1))
    return out


def _name_order(name):
    head, _, rest = name.partition("-")
    try:
        return (int(head), int(rest.split(".", 1)[0]))
    except ValueError:
        return (1 << 62, 0)


def locate(recording_path: str, pid: int):
    """``--pid PID``: (recording to replay, names of the fork children to
    follow from it). A subprocess child is a recording of its own (empty
    chain); a forked child is reached by replaying its nearest non-forked
    ancestor and following the forks down to it."""
    from retracesoftware.runner import UsageError
    root_pre = read_preamble(recording_path)
    if root_pre is not None and root_pre.get("pid") == pid:
        return recording_path, []
    procs = processes(recording_path)
    by_dir = {}
    for p in procs:
        by_dir.setdefault(os.path.dirname(p["path"]), []).append(p)
    target = next((p for p in procs if p["pid"] == pid), None)
    if target is None:
        known = ", ".join(str(p["pid"]) for p in procs) or "none"
        raise UsageError(f"the recording has no process {pid} (child processes: {known}) — "
                         f"see python -m retracesoftware inspect {recording_path}")
    chain = []
    current = target
    while current["kind"] == "fork":
        chain.insert(0, current["name"])
        folder = os.path.dirname(current["path"])
        owner = folder[: -len(DIR_SUFFIX)]
        parent = next((p for p in by_dir.get(folder, ()) if p["pid"] == current["parent_pid"]
                       and p is not current), None)
        if parent is None:
            return owner, chain
        current = parent
    return current["path"], chain
