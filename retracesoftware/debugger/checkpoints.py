"""Checkpoints for going back: forked, frozen copies of the replay process.

While the debugger replays, the engine offers every program line to
`Checkpoints.maybe_take`; every `EVERY` tape events (and at every position
the user stops at, `at_stop`) the replay — when it is single-threaded at
that moment — forks a *checkpoint*: a frozen copy that waits on its FIFO.
Going back to a position resumes the latest checkpoint at or before it:
the checkpoint forks again (so it survives for the next trip), and the
fork runs forward silently to the target, where the debugger stops. Only
with no usable checkpoint (threads all along, checkpoints off, not Linux)
does the replay re-execute itself from the start (engine.reexecute).

Processes (Linux; the prctl calls make the cleanup):

* the **supervisor** is the process the user started (the terminal's, or
  the DAP adapter's child). It is a child subreaper, so every checkpoint
  and every resumed replay is re-parented to it (double forks), and each of
  those has ``PR_SET_PDEATHSIG = SIGKILL``: when the supervisor ends or is
  killed, all of them die with it — no orphans. While no trip back was
  made the supervisor is the active replay; after its first one it only
  waits for the active replay's end and exits with its status (the exit
  code the user sees).
* the **active** replay is the one the debugger talks to: it owns the
  terminal (same process group; the others never read stdin) or the DAP
  pipes (the agent's reader thread runs only there).
* **checkpoints** ignore SIGINT and wait on their FIFO for "resume" (with
  the debugger state and the current list of checkpoints) or "exit".

At most `MAX` checkpoints live: past that one is dropped so that their
spacing grows with the distance from the present (dense where you are,
sparse far back); the first program line's checkpoint is always kept (a
``restart`` or ``goto 0`` resumes it).

A checkpoint restores, when resumed: the offsets of the regular files it
had open (the Python backend's tape reader reads a shared file offset;
a DAP client's output files), the breakpoints and front-end state of the
process that went back, and its SIGINT handler.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal as _signal_mod
import stat as _stat
import sys
import tempfile

# Private references taken before the boundary is installed.
_getpid = os.getpid
_getppid = os.getppid
_waitpid = os.waitpid
_kill = os.kill
_pipe = os.pipe
_read = os.read
_write = os.write
_open = os.open
_close = os.close
_lseek = os.lseek
_fstat = os.fstat
_listdir = os.listdir
_mkfifo = getattr(os, "mkfifo", None)
_unlink = os.unlink
_rmdir = os.rmdir
_set_blocking = os.set_blocking
_exit = os._exit
_signal = _signal_mod.signal
_SIGINT = _signal_mod.SIGINT
_SIGKILL = _signal_mod.SIGKILL
_SIG_IGN = _signal_mod.SIG_IGN
_S_ISREG = _stat.S_ISREG
_sleep = __import__("time").sleep
_perf_counter = __import__("time").perf_counter
_monotonic = __import__("time").monotonic
_get_native_id = __import__("_thread").get_native_id
_select = __import__("select").select
_pidfd_open = getattr(os, "pidfd_open", None)
#: pidfd_open flag: a pidfd for one thread, readable when it ends (Linux 6.9+)
_PIDFD_THREAD = os.O_EXCL

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

#: seconds of replay between two checkpoints (RETRACE_CHECKPOINT_SECONDS)
SECONDS = 1.0
#: tape events at least between two checkpoints (RETRACE_CHECKPOINT_EVENTS)
EVERY = 2000
#: live checkpoints at most (RETRACE_CHECKPOINT_MAX)
MAX = 12
#: how long a checkpoint waits for the front end's stopped threads to end
ALONE_SECONDS = 10.0

try:
    if not sys.platform.startswith("linux"):
        raise OSError("checkpoints need Linux (prctl)")
    # fork() with the GIL held and without Python's at-fork handlers: a
    # checkpoint is the same process frozen, not a fork of the program
    # (random would reseed, our runtime would start a child recording).
    _fork = ctypes.PyDLL(None).fork
    _fork.restype = ctypes.c_int
    _fork.argtypes = ()
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.restype = ctypes.c_int
    _prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    _c_waitpid = ctypes.PyDLL(None, use_errno=True).waitpid
    _c_waitpid.restype = ctypes.c_int
    _c_waitpid.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int)
    _c_read = ctypes.PyDLL(None, use_errno=True).read
    _c_read.restype = ctypes.c_ssize_t
    _c_read.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    SUPPORTED = True
except Exception:          # pragma: no cover - not Linux
    SUPPORTED = False


def _ignore_sigint():
    """SIG_IGN for SIGINT (a Ctrl-C is for the active replay's pdb); the
    previous handler, or None when this is not the main thread."""
    try:
        return _signal(_SIGINT, _SIG_IGN)
    except ValueError:
        return None


def _log(message):
    from retracesoftware.debugger.engine import log
    log(message)


def _env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


#: counters for tests and `info checkpoints` (per process)
stats = {"taken": 0, "resumed_from": 0, "reexecuted": 0, "fork_seconds": 0.0}


def _regular_offsets():
    """fd -> offset of every open regular file (what a resumed fork restores)."""
    out = {}
    try:
        names = _listdir("/proc/self/fd")
    except OSError:
        return out
    for name in names:
        try:
            fd = int(name)
            if _S_ISREG(_fstat(fd).st_mode):
                out[fd] = _lseek(fd, 0, os.SEEK_CUR)
        except (OSError, ValueError):
            pass
    return out


def _other_threads():
    """The kernel's ids of this process's threads but the calling one
    (None when /proc cannot say)."""
    me = str(_get_native_id())
    try:
        return [int(t) for t in _listdir("/proc/self/task") if t != me]
    except OSError:
        return None


def _wait_thread_end(tid, deadline) -> bool:
    """Wait (until *deadline*) for thread *tid* of this process to end,
    on a thread pidfd. False when this kernel has none (Linux < 6.9)."""
    if _pidfd_open is None:
        return False
    try:
        fd = _pidfd_open(tid, _PIDFD_THREAD)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:
        # Still ours once the pidfd holds it: the id cannot be reused now.
        if not os.path.exists(f"/proc/self/task/{tid}"):
            return True
        _select([fd], [], [], max(0.0, deadline - _monotonic()))
        return True
    finally:
        _close(fd)


def _task_count():
    try:
        return len(_listdir("/proc/self/task"))
    except OSError:
        return 99


def _has_children() -> bool:
    """Whether this process has live child processes (a child replay the
    program started): a checkpoint's fork would not be their parent."""
    try:
        for tid in _listdir("/proc/self/task"):
            fd = _open(f"/proc/self/task/{tid}/children", os.O_RDONLY)
            try:
                if _read(fd, 64).strip():
                    return True
            finally:
                _close(fd)
    except OSError:
        return True
    return False


class Checkpoints:
    def __init__(self, engine):
        self.engine = engine
        self.enabled = SUPPORTED and os.environ.get("RETRACE_CHECKPOINTS", "1") != "0" \
            and _mkfifo is not None
        self.every = max(1, _env_int("RETRACE_CHECKPOINT_EVENTS", EVERY))
        self.max = max(2, _env_int("RETRACE_CHECKPOINT_MAX", MAX))
        try:
            self.seconds = float(os.environ.get("RETRACE_CHECKPOINT_SECONDS", SECONDS))
        except ValueError:
            self.seconds = SECONDS
        self._last_time = _monotonic()
        self.registry = []          # [{pid, fifo, event, lines, at, serial, first}]
        self.serial = 0
        self.supervisor = None      # pid
        self.status_w = None        # fd: "active PID" / "leave PID" lines to the supervisor
        self.status_r = None        # the supervisor's end
        self.dir = None
        self._countdown = 0
        self._first_done = False
        self.our_threads = 0        # threads of ours (the DAP reader) counted by /proc/self/task
        if self.enabled:
            from retracesoftware.utils import DISABLED
            previous = engine.gate.swap(DISABLED)
            try:
                self._become_supervisor()
            except Exception as exc:
                from retracesoftware.debugger.engine import log
                log(f"checkpoints off: {exc!r}")
                self.enabled = False
            finally:
                engine.gate.phase = previous

    # ---------------------------------------------------------------- setup
    def _become_supervisor(self):
        if _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        self.supervisor = _getpid()
        self.status_r, self.status_w = _pipe()
        self.dir = tempfile.mkdtemp(prefix=f"retrace-checkpoints-{self.supervisor}-")

    @classmethod
    def resume(cls, engine):
        """Kept for the re-execution path: a fresh set (engine.reexecute
        discarded the old one)."""
        return cls(engine)

    def describe(self) -> str:
        if not self.enabled:
            return "checkpoints: off (going back re-executes the replay from the start)"
        if not self.registry:
            return (f"checkpoints: none yet (one every {self.seconds:g} s of replay while single-threaded); "
                    f"this session: taken {stats['taken']}, resumed from {stats['resumed_from']}, "
                    f"re-executions {stats['reexecuted']}")
        parts = [f"#{c['serial']} event {c['event']} thread {c['at'][0]} line event {c['at'][1]}"
                 f"{' (start)' if c.get('first') else ''} pid {c['pid']}" for c in self.registry]
        average = stats["fork_seconds"] / stats["taken"] * 1000 if stats["taken"] else 0.0
        return (f"checkpoints ({len(self.registry)} live, max {self.max}; this session: "
                f"taken {stats['taken']} ({average:.1f} ms each), resumed from {stats['resumed_from']}, "
                f"re-executions {stats['reexecuted']}): " + "; ".join(parts))

    # ------------------------------------------------------------- taking
    def maybe_take(self, st, frame):
        """Every program line (runtime DISABLED): a checkpoint when one is due."""
        if not self.enabled:
            return
        if not self._first_done:
            self._first_done = True
            self._take(st, first=True)
            return
        self._countdown -= 1
        if self._countdown > 0:
            return
        self._countdown = 256
        if _monotonic() - self._last_time < self.seconds:
            return
        index = self.engine.event_index()
        if index is None:
            return
        for c in self.registry:
            if abs(c["event"] - index) < self.every:
                return
        self._take(st)

    def at_stop(self, frame) -> bool:
        """The user stops here: keep a checkpoint of this position. True
        when this process is a fork resumed from it that must not stop
        (the engine already ran this line's travel step)."""
        if not self.enabled or frame is None or self.engine.travel is not None:
            return False
        st = self.engine.thread_state()
        if st is None:
            return False
        here = [st.tid, st.lines]
        for c in self.registry:
            if c["at"] == here:
                return False
        if self._take(st):
            self.engine.resumed_line(frame)
            return True
        return False

    def _single_threaded(self):
        """One OS thread (besides the DAP agent's reader) and no child
        process: what a fork copies is the whole replay."""
        return _task_count() <= 1 + self.our_threads and not _has_children()

    def _take(self, st, first=False) -> bool:
        """Fork a checkpoint here. Returns True in a fork resumed from it
        (later, when someone goes back to it), False in the replay that
        took it (or when none was taken)."""
        if not self._single_threaded():
            return False
        gate = self.engine.gate
        from retracesoftware.utils import DISABLED
        previous = gate.swap(DISABLED)
        frontend = self.engine.frontend
        resumed = False
        try:
            # The fork must copy a process of ONE OS thread. Our fork is
            # libc's (no PyOS_AfterFork_Child), so a second thread that
            # waits for the GIL at that moment (the DAP reader, woken by a
            # request or just started) leaves gil_drop_request set in the
            # copy: at its first GIL release the copy's only thread waits
            # in drop_gil (FORCE_SWITCHING) for that thread to take the GIL,
            # forever. So the front end's threads end first, and we wait
            # until the kernel has no thread of theirs left.
            stopped = frontend.stop_threads() or []
            if not self._alone(stopped):
                return False
            resumed = self._take_disabled(st, first)
            return resumed
        finally:
            if not resumed:
                frontend.start_threads()
            gate.phase = previous

    def _alone(self, stopped) -> bool:
        """Wait until the *stopped* threads of ours are gone (each still
        tears down for a moment after it said it is done); True when this
        process is then one OS thread. False — no checkpoint — when another
        thread runs, or ours are not gone within ALONE_SECONDS."""
        deadline = _monotonic() + ALONE_SECONDS
        while True:
            others = _other_threads()
            if others == []:
                return True
            if others is None or not set(others) <= set(stopped) or _monotonic() > deadline:
                _log(f"no checkpoint: threads {others} running (ours stopped: {stopped})")
                return False
            if not _wait_thread_end(others[0], deadline):
                _sleep(0.0002)       # no thread pidfd (Linux < 6.9): look again

    def _take_disabled(self, st, first):
        engine = self.engine
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        self.serial += 1
        entry = {"pid": None, "fifo": os.path.join(self.dir, f"cp{_getpid()}-{self.serial}"),
                 "event": engine.event_index() or 0,
                 "lines": [[tid, s.lines] for tid, s in engine.by_tid.items()],
                 "at": [st.tid, st.lines], "serial": self.serial, "first": first}
        try:
            _mkfifo(entry["fifo"], 0o600)
        except OSError:
            return False
        started = _perf_counter()
        offsets = _regular_offsets()
        # Opened here: the FIFO has its reader (the checkpoint's copy of
        # this descriptor) from the start.
        fifo_fd = _open(entry["fifo"], os.O_RDWR)
        threads = _task_count()
        pid = self._double_fork()
        if pid == 0:
            return self._checkpoint_main(entry, offsets, fifo_fd)
        _close(fifo_fd)
        if pid is None:
            return False
        entry["pid"] = pid
        stats["fork_seconds"] += _perf_counter() - started
        self._last_time = _monotonic()
        stats["taken"] += 1
        self.registry.append(entry)
        _log(f"checkpoint #{entry['serial']} taken at event {entry['event']} (pid {pid}, "
             f"forked from {threads} thread{'s' if threads != 1 else ''})")
        self._thin()
        return False

    def _double_fork(self):
        """Fork a grandchild re-parented to the supervisor (its parent, an
        intermediate, exits at once). Returns its pid here, 0 in it, None
        on failure."""
        r, w = _pipe()          # the grandchild's pid, from the intermediate
        dr, dw = _pipe()        # end of file: the intermediate is gone
        pid = _fork()
        if pid < 0:
            for fd in (r, w, dr, dw):
                _close(fd)
            return None
        if pid == 0:
            _close(r)
            intermediate = _getpid()
            pid2 = _fork()
            if pid2 == 0:
                _close(w)
                _close(dw)
                while _read(dr, 1):
                    pass
                _close(dr)
                # Its descriptors close before it is reaped: wait for the
                # re-parenting itself.
                for _ in range(20000):
                    if _getppid() != intermediate:
                        break
                    _sleep(0.0001)
                self._die_with_supervisor()
                return 0
            _write(w, str(pid2).encode())
            _exit(0)
        _close(w)
        _close(dw)
        _close(dr)
        _waitpid(pid, 0)
        data = b""
        while True:
            chunk = _read(r, 64)
            if not chunk:
                break
            data += chunk
        _close(r)
        try:
            return int(data)
        except ValueError:
            return None

    def _checkpoint_main(self, entry, offsets, fd):
        """In the checkpoint: freeze until resumed. Returns True in the
        resumed fork (the new active replay)."""
        old_int = _ignore_sigint()
        buf = b""
        while True:
            chunk = _read(fd, 65536)
            if not chunk:
                _exit(0)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                message = json.loads(line)
                if message.get("op") == "exit":
                    try:
                        _unlink(entry["fifo"])
                    except OSError:
                        pass
                    _exit(0)
                if message.get("op") != "resume":
                    continue
                _log(f"checkpoint #{entry['serial']} resumed")
                if self._double_fork() == 0:
                    _close(fd)
                    if old_int is not None:
                        _signal(_SIGINT, old_int)
                    for ofd, offset in offsets.items():
                        try:
                            _lseek(ofd, offset, os.SEEK_SET)
                        except OSError:
                            pass
                    self._become_active(message)
                    return True

    def _die_with_supervisor(self):
        _prctl(PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if _getppid() != self.supervisor:
            _log(f"parent {_getppid()} is not the supervisor {self.supervisor}: leaving")
            _exit(0)            # the supervisor is gone already

    def _become_active(self, message):
        stats.update(message.get("stats") or {})
        stats["resumed_from"] += 1
        self.registry = message["checkpoints"]
        self.serial = max([self.serial] + [c["serial"] for c in self.registry])
        self._countdown = 0
        self._last_time = _monotonic()
        self._say(f"active {_getpid()}")
        self.engine.resume_with(message["state"])

    def _say(self, line):
        try:
            _write(self.status_w, (line + "\n").encode())
        except OSError:
            pass

    def _thin(self):
        """Drop checkpoints past `max`: the one whose loss leaves the
        smallest gap relative to its distance from the present."""
        while len(self.registry) > self.max:
            now = self.engine.event_index() or 0
            ordered = sorted(self.registry, key=lambda c: (c["event"], c["serial"]))
            best, best_score = None, None
            for i in range(1, len(ordered) - 1):
                c = ordered[i]
                if c.get("first"):
                    continue
                gap = ordered[i + 1]["event"] - ordered[i - 1]["event"]
                score = gap / max(1, abs(now - c["event"]))
                if best_score is None or score < best_score:
                    best, best_score = c, score
            if best is None:
                best = next((c for c in ordered if not c.get("first")), None)
                if best is None:
                    return
            self._drop(best)

    def _drop(self, entry):
        self.registry = [c for c in self.registry if c is not entry]
        try:
            _kill(entry["pid"], _SIGKILL)
        except OSError:
            pass
        try:
            _unlink(entry["fifo"])
        except OSError:
            pass
        if _getpid() == self.supervisor:
            try:
                _waitpid(entry["pid"], 0)     # our child: reap it now
            except OSError:
                pass

    def _send(self, entry, message) -> bool:
        try:
            fd = _open(entry["fifo"], os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            _set_blocking(fd, True)
            data = json.dumps(message).encode() + b"\n"
            view = memoryview(data)
            while view:
                view = view[_write(fd, view):]
            return True
        except OSError:
            return False
        finally:
            _close(fd)

    # ------------------------------------------------------------ going back
    def usable(self, travel):
        """The latest checkpoint from which *travel* can run forward."""
        kind = travel["kind"]
        before = travel.get("before")          # a search retried from earlier
        best = None
        for c in self.registry:
            if before is not None and c["event"] >= before:
                continue
            if kind == "start":
                ok = c.get("first")
            elif kind == "event":
                ok = c["event"] < travel["event"] or c.get("first")
            else:
                tid, n = travel["target"] if kind == "position" else travel["until"]
                lines = {str(t): k for t, k in c["lines"]}
                # A search needs a stretch before where it ends: not the
                # checkpoint of the stop it started from.
                ok = lines.get(str(tid), 0) < n if kind == "search" else lines.get(str(tid), 0) <= n
            if ok and (best is None or (c["event"], c["serial"]) > (best["event"], best["serial"])):
                best = c
        return best

    def resume_from(self, state) -> bool:
        """Go back through a checkpoint: hand *state* to it and leave (this
        process waits as the supervisor, or ends). False: none usable."""
        if not self.enabled:
            return False
        travel = state["travel"]
        while True:
            entry = self.usable(travel)
            if entry is None:
                return False
            travel.pop("from_event", None)
            if travel.get("kind") == "search" and not entry.get("first"):
                travel["from_event"] = entry["event"]
            engine = self.engine
            from retracesoftware.debugger.engine import log
            log(f"resuming checkpoint #{entry['serial']} (event {entry['event']}, at {entry['at']}) "
                f"for {travel}")
            state.update(engine.frontend.suspend() or {})
            message = {"op": "resume", "state": state, "checkpoints": self.registry, "stats": stats}
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
            me = _getpid()
            self._say(f"leave {me}")
            if self._send(entry, message):
                break
            # That one is gone: forget it and try the next.
            self._say(f"active {me}")
            engine.frontend.unsuspend()
            self.registry = [c for c in self.registry if c is not entry]
        # Handed over: this process never runs the program again.
        try:
            if me == self.supervisor:
                self._wait_as_supervisor()
        finally:
            _exit(0)

    def _wait_as_supervisor(self):
        """The supervisor after its first trip back: wait for the active
        replay's end and exit with its status. The waits are libc calls
        made with the GIL held: a program thread left in this process
        (going back from a threaded stretch) never runs again."""
        _ignore_sigint()
        self.engine.unmute()
        _set_blocking(self.status_r, False)
        status = ctypes.c_int(0)
        buffer = ctypes.create_string_buffer(65536)
        active = None
        reaped = {}
        pending = b""
        while True:
            pid = _c_waitpid(-1, ctypes.byref(status), 0)
            if pid < 0 and ctypes.get_errno() == 4:      # EINTR
                continue
            while True:
                n = _c_read(self.status_r, buffer, 65536)
                if n <= 0:
                    break
                pending += buffer.raw[:n]
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                word, _, who = line.decode().partition(" ")
                if word == "active":
                    active = int(who)
                elif word == "leave" and active == int(who):
                    active = None
            if pid > 0:
                reaped[pid] = status.value
            if active is not None and active in reaped:
                self._cleanup_dir()
                _exit(_exit_code(reaped[active]))
            if pid < 0:
                self._cleanup_dir()
                _exit(1)

    def _cleanup_dir(self):
        if self.dir is None:
            return
        try:
            for name in _listdir(self.dir):
                try:
                    _unlink(os.path.join(self.dir, name))
                except OSError:
                    pass
            _rmdir(self.dir)
        except OSError:
            pass

    def discard_all(self):
        """Before a re-execution: the checkpoints go (the new image makes its own)."""
        for entry in list(self.registry):
            self._drop(entry)
        self.registry = []
        if self.supervisor == _getpid():
            self._cleanup_dir()

    def at_exit(self):
        if self.supervisor == _getpid():
            self._cleanup_dir()


def _exit_code(status):
    try:
        code = os.waitstatus_to_exitcode(status)
    except ValueError:
        return 1
    return code if code >= 0 else 128 - code
