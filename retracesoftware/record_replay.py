"""Record and replay a whole program in this process (the CLI's engine room).

Record:  choose the hash seed → open the recording (preamble first) → build a
         System in record mode → install the boundary → run the program as
         ``__main__`` in the INTERNAL phase → at interpreter exit (after
         non-daemon threads are joined and the program's atexit handlers
         ran) close the recording.
Replay:  open the recording → check the preamble (Python version, sources,
         configs) → pin the recorded hash seed → System in replay mode →
         install → run the same program; its boundary calls are answered
         from the recording → at exit check the whole recording was used.
"""
from __future__ import annotations

import atexit
import os
import sys
import time

from retracesoftware import children
from retracesoftware.install import report
from retracesoftware import preamble as preamble_mod
from retracesoftware.runner import Target, UsageError, execute, parse_command, prepare_sys, report_exception
from retracesoftware.utils.startup import resume_collector

EXIT_DIVERGENCE = 3
EXIT_BAD_RECORDING = 4

_HASHSEED_MARK = "RETRACE_PINNED_HASHSEED"

# Private references: the program may patch or replace these.
_os_exit = os._exit
_execv = os.execv


def _sigint_ignored():
    """The process started with SIGINT ignored (a background job of a script)."""
    import _signal    # not signal: its enum classes are ~1 ms of a start, and the replay then imports it too
    try:
        return _signal.getsignal(_signal.SIGINT) == _signal.SIG_IGN
    except (ValueError, AttributeError):
        return False
_environ = os.environ


def _say(opts, message: str) -> None:
    if opts.verbose:
        report.write(f"retrace: {message}\n")


def _say_backends(opts) -> None:
    """With --verbose: which backend each native layer uses, and what it can do."""
    if opts.verbose:
        from retracesoftware import functional, stream, utils
        _say(opts, "backends: " + "; ".join(m.CAPABILITIES.describe() for m in (functional, utils, stream)))


def reexec_with_hash_seed(seed: str) -> None:
    """Restart this command with PYTHONHASHSEED pinned (same pid, same argv)."""
    env = dict(_environ)
    env["PYTHONHASHSEED"] = seed
    env[_HASHSEED_MARK] = seed
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def current_hash_seed() -> str | None:
    """The seed this interpreter runs with, when we know it."""
    value = _environ.get("PYTHONHASHSEED")
    if value is None or value == "random":
        return None
    return value


def forget_our_hash_seed() -> None:
    # The program sees the environment it was started with: if we set
    # PYTHONHASHSEED ourselves, take it (and our mark) out again.
    if _environ.pop(_HASHSEED_MARK, None) is not None:
        _environ.pop("PYTHONHASHSEED", None)


def seed_for_recording() -> tuple[str, bool]:
    """Record: the hash seed this interpreter runs with, after re-exec'ing
    with a random one when none is pinned; and whether we pinned it (then
    the program does not see our PYTHONHASHSEED: `forget_our_hash_seed`)."""
    seed = current_hash_seed()
    if seed is None:
        import random as _random_mod  # before install: our choice is not the program's
        reexec_with_hash_seed(str(_random_mod.SystemRandom().randrange(1, 2**32)))
    pinned_by_us = _environ.get(_HASHSEED_MARK) == seed
    forget_our_hash_seed()
    return seed, pinned_by_us


def expand_recording_path(pattern: str) -> str:
    """The recording path for this process. A path another recorder is still
    writing (its lock is held) gets ``-1``, ``-2``… after the pid when the
    pattern has ``{pid}``; without ``{pid}`` the caller refuses it."""
    from retracesoftware.stream._common import recording_busy
    n = 0
    while True:
        pid = str(os.getpid()) if n == 0 else f"{os.getpid()}-{n}"
        path = pattern.replace("{pid}", pid)
        if "%" in path:
            path = time.strftime(path)
        if "{pid}" not in pattern or n >= 100 or not recording_busy(path):
            return path
        n += 1


def _busy_line(path) -> str:
    from retracesoftware.install.masking import printable
    return (f"the recording {printable(path)} is being written by another running recorder "
            f"— record to another path (a {{pid}} in --recording gives each process its own)")


def _load_config():
    from retracesoftware.install.config import load_config
    return load_config()


def record_main(opts) -> int:
    report.reserve()
    interpreter, target = parse_command(opts.command)
    if interpreter is not None and not _same_interpreter(interpreter):
        # Another Python: let it record itself with its own retracesoftware.
        argv = [interpreter, "-m", "retracesoftware"] + _option_args(opts) + ["--"] + opts.command[1:]
        sys.stdout.flush()
        os.execvp(interpreter, argv)
    seed, pinned_by_us = seed_for_recording()

    path = expand_recording_path(opts.recording)
    from retracesoftware.stream._common import recording_busy
    if recording_busy(path):
        raise UsageError(_busy_line(path))
    config = _load_config()
    from retracesoftware.install.record_session import RecordSession

    pre = preamble_mod.build(target, hash_seed=seed, config_digest=config.digest,
                             options={"stacks": opts.stacks, "hash_seed_pinned_by_retrace": pinned_by_us,
                                      "redacted": list(opts.redact)})
    if _sigint_ignored():                     # the replay starts the same way (install/signals.py)
        pre["options"]["sigint"] = "ignored"
    if getattr(opts, "schedule", False):     # thread switches recorded (install/schedule.py)
        pre["options"]["schedule"] = True
        if getattr(opts, "chaos", False):
            pre["options"]["chaos"] = True
    children.remove_stale_children(path)
    try:
        session = RecordSession(path, pre, config, stacks=opts.stacks, redact=opts.redact,
                                no_redact=opts.no_redact, compress=opts.compress)
    except OSError as exc:
        import errno
        if exc.errno == errno.EBUSY:
            raise UsageError(_busy_line(path)) from None
        # Policy (docs/RELIABILITY.md): retrace never stops the program from
        # running; without a recording it runs as plain python would.
        _cannot_create(path, exc)
        prepare_sys(target)
        resume_collector()                    # no session to resume it (utils/startup.py)
        try:
            execute(target)
            return 0
        except BaseException as exc:
            return report_exception(exc)
    try:
        prepare_sys(target)
        session.start()
        from retracesoftware import sources
        sources.install(session)
        children.install(session, path)
    except BaseException:
        # Nothing half-written is left behind when we fail before the program runs.
        session.abandon()
        raise
    _say(opts, f"recording to {path}")
    _say_backends(opts)
    atexit.register(session.close)   # registered first, so it runs last
    try:
        session.run(execute, target)
        code = 0
    except BaseException as exc:  # the program's own exception: report as python would
        code = session.report(report_exception, exc)
    session.main_finished(code)
    return code


def _cannot_create(path, exc) -> None:
    from retracesoftware.install.masking import mask
    import errno
    reason = ("another running recorder is writing it" if exc.errno == errno.EBUSY
              else exc.strerror or exc)
    report.write(mask(f"retrace: warning: cannot create the recording {path} "
                      f"({reason}) — running the program without recording\n"))


def replay_main(opts) -> int:
    report.reserve()
    from retracesoftware.install.recording_streams import open_recording
    from retracesoftware.install.replay_session import ReplaySession

    path = opts.recording
    if not os.path.exists(path):
        from retracesoftware.utils.errors import RecordingFormatError
        raise RecordingFormatError(f"recording {path} does not exist — check the path")
    chain = None
    if getattr(opts, "test", None):
        # --test NODEID: the process that ran it (the session or an xdist worker).
        from retracesoftware import test_replay
        test_replay.resolve(opts)
    if opts.pid is not None:
        # One process of the run: a subprocess child is a recording of its
        # own; a forked child is reached through its ancestors (children.py).
        path, chain = children.locate(path, opts.pid)
    reader = open_recording(path, pid=opts.pid)
    pre = reader.preamble
    if not isinstance(pre, dict) or "target" not in pre:
        from retracesoftware.utils.errors import RecordingFormatError
        raise RecordingFormatError(f"{path} has no retrace preamble — not a recording made by retracesoftware")
    # A recording is data (docs/RELIABILITY.md, "Sharing recordings"): every
    # field is checked, and what runs is resolved here from the target
    # inspect shows, never from a path or code the file chooses.
    preamble_mod.validate(pre)
    target = preamble_mod.resolve_target(pre)
    if target.kind == "code" and not opts.trust and target.value != getattr(opts, "vouched_code", None):
        reader.close()
        raise UsageError(_untrusted_code_line(target.value, opts.recording))
    config = _load_config()
    from retracesoftware import paths
    pathmap = paths.for_replay(pre, getattr(opts, "remap", ()), sources=lambda: _recorded_sources(path))
    problems = preamble_mod.check(paths.mapped_preamble(pre, pathmap), config_digest=config.digest,
                                  force=opts.force)
    problems += preamble_mod.check_program(paths.mapped_preamble(pre, pathmap), paths.mapped_target(target, pathmap),
                                           force=opts.force)
    seed = preamble_mod.hash_seed(pre)
    if current_hash_seed() != seed:
        reader.close()
        reexec_with_hash_seed(seed)   # checks again there: warn once, there
    forget_our_hash_seed()
    for problem in problems:
        report.write(f"retrace: warning: {problem} (replaying anyway: --force)\n")
    paths.check_interpreter(pre)

    session = ReplaySession(reader, pre, config, pdb=opts.pdb, thread_timeout=opts.thread_timeout,
                            debug=opts.debug, check_output=getattr(opts, "check_output", True))
    if getattr(opts, "test", None):
        from retracesoftware import test_replay
        test_replay.begin(opts, session)   # its atexit runs after session.close
    atexit.register(session.close)
    # Our own imports happen now, before the recorded sys.path is in place
    # (a recording must not be able to steer them).
    _import_runtime_modules(opts)
    _say_backends(opts)
    from retracesoftware import debugger as debugger_mod
    debugging = debugger_mod.requested(opts)
    if debugging:
        debugger_mod.prepare()
    if pathmap:
        _say(opts, f"reading code recorded under {pathmap.describe()}")
        session.system.live_call_filter = pathmap.live_call_filter
        pathmap.install_import_reads()
        from retracesoftware import sources as sources_mod
        sources_mod.live_path = pathmap.map
    try:
        session.start()
    except BaseException as exc:
        from retracesoftware.utils.errors import ReplayDivergence
        # Diverged before the program began (the tape disagrees with what
        # start-up makes), or start-up choked on what the tape gave it (a
        # damaged or forged value: an fstat result without st_blksize):
        # report and leave now. Half-installed, the interpreter's own
        # shutdown could wait for threads that are not there (threading
        # compares idents that are recorded ones).
        if isinstance(exc, ReplayDivergence):
            code = session.divergence(exc)
        else:
            if opts.debug:
                import traceback
                traceback.print_exc()
            from retracesoftware.install.masking import mask
            report.write(mask(f"retrace: error: the recording's start-up events are damaged "
                              f"({type(exc).__name__}: {exc}) — replay stopped before the program "
                              f"began; re-record\n"))
            code = 4
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    from retracesoftware import sources
    sources.install(session, force=opts.force)
    children.install(session, path, pid_chain=chain or None, trust=opts.trust)
    # --test NODEID --pdb: the debugger starts at the test (test_replay).
    testing_one = bool(getattr(opts, "test", None))
    debugger = debugger_mod.start(session, opts) if debugging and not testing_one else None
    # The program sees what it saw when recorded.
    sys.argv[:] = list(pre.get("argv", sys.argv))
    sys.path[:] = list(pre.get("sys_path", sys.path))
    prepare_sys(target)
    if target.kind == "module" and pre.get("sys_path"):
        sys.path[0] = pre["sys_path"][0]   # the recorded cwd, not this replay's
    try:
        session.run(execute, target, debugger)
        code = 0
    except BaseException as exc:
        found = session.find_divergence(exc)
        if found is not None:
            exc = found
            code = session.divergence(exc)
            if debugger is not None:
                # In the program's frame where it happened (docs/DEBUGGING.md).
                debugger.post_mortem(exc, "divergence")
            return code
        code = session.report(report_exception, exc)
        if debugger is not None and not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            debugger.post_mortem(exc, "exception")
    if debugger is not None:
        debugger.finished(code)
    session.main_finished(code)
    if testing_one:
        from retracesoftware import test_replay
        code = test_replay.exit_code(code)
    return code


def _recorded_sources(path):
    """Digests of the project's sources a pytest session recording holds
    (relative path -> digest; empty for other recordings)."""
    try:
        from retracesoftware.install import pytest_session
        return pytest_session.sources_in(path)
    except Exception:
        return {}


def _untrusted_code_line(code: str, recording: str) -> str:
    from retracesoftware.install.masking import printable
    first = code.strip().splitlines()[0] if code.strip() else ""
    more = len(code.strip().splitlines()) > 1
    if len(first) > 60:
        first, more = first[:60], True
    shown = printable(first) + ("…" if more else "")
    return (f"this recording runs code stored in the recording itself (python -c '{shown}'), not a "
            f"program on this machine — read it with python -m retracesoftware inspect {recording}, then "
            f"replay with --trust to run it")


#: Standard-library modules our runtime may import lazily during a replay.
#: Only modules whose import makes no boundary call (subprocess calls
#: os.confstr, random os.urandom: importing those early would take events
#: away from the program's own import of them). ``opcode``: install/signals.py
#: names the instruction a signal was delivered at. (difflib is not here:
#: only a config error's wording uses it, and configs are loaded before.)
_RUNTIME_MODULES = ("traceback", "linecache", "warnings", "opcode")

#: Only the debugger (retracesoftware/debugger) and ``--test`` (ast) use
#: these; ``bdb`` brings inspect, ast and dis (~7 ms of every replay start),
#: so a replay that runs neither does not import them.
_DEBUGGER_MODULES = ("bdb", "ast")


def _import_runtime_modules(opts) -> None:
    import importlib
    from retracesoftware import debugger as debugger_mod
    extra = _DEBUGGER_MODULES if debugger_mod.requested(opts) or getattr(opts, "test", None) else ()
    for name in _RUNTIME_MODULES + extra + (("pdb",) if opts.pdb else ()):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from retracesoftware.install import masking  # noqa: F401


def _which(name: str) -> str | None:
    """``shutil.which(name)`` for a bare name on POSIX, without importing
    shutil (with bz2, lzma and fnmatch: ~1.5 ms of a record's start, and
    the replay imports what the record had loaded)."""
    seen = set()
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        folder = folder or os.curdir
        if folder in seen:
            continue
        seen.add(folder)
        path = os.path.join(folder, name)
        if os.path.exists(path) and os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path):
            return path
    return None


def _same_interpreter(name: str) -> bool:
    found = _which(name) if os.sep not in name else name
    if found is None:
        raise UsageError(f"interpreter {name!r} not found on PATH")
    try:
        return os.path.samefile(found, sys.executable) or os.path.realpath(found) == os.path.realpath(sys.executable)
    except OSError:
        return False


def _option_args(opts) -> list[str]:
    args = ["--recording", opts.recording]
    for flag in ("force", "debug", "verbose", "stacks"):
        if getattr(opts, flag):
            args.append("--" + flag)
    for name in opts.redact:
        args += ["--redact", name]
    for name in getattr(opts, "no_redact", ()):
        args += ["--no-redact", name]
    if not opts.compress:
        args.append("--no-compress")
    return args


def start_recording_in_place(opts) -> None:
    """Record the running interpreter from here on (the ``.pth`` hook's entry).

    The interpreter itself then runs the program as ``__main__``; the recording
    replays with ``python -m retracesoftware --recording PATH`` like any other.
    """
    _, target = parse_command(opts.command)
    seed, pinned_by_us = seed_for_recording()
    path = expand_recording_path(opts.recording)
    from retracesoftware.stream._common import recording_busy
    if recording_busy(path):
        import errno
        _cannot_create(path, OSError(errno.EBUSY, "busy"))
        return
    config = _load_config()
    from retracesoftware.install.record_session import RecordSession

    saved_argv = list(sys.argv)
    saved_path = list(sys.path)
    sys.argv[:] = target.argv
    # At .pth time the interpreter has not yet put the program's own entry
    # at sys.path[0] (it does once site is done). The replay sets sys.path
    # to the recorded one and then replaces entry 0 with that entry
    # (runner.prepare_sys): without it there, the replay lost the first real
    # entry (a PYTHONPATH folder, or python3XX.zip).
    if not sys.flags.safe_path:   # PYVERSIONS: -P / PYTHONSAFEPATH (3.11+)
        sys.path.insert(0, os.path.dirname(target.path) if target.kind == "script" else
                        (os.getcwd() if target.kind == "module" else ""))
    try:
        pre = preamble_mod.build(target, hash_seed=seed, config_digest=config.digest,
                                 options={"stacks": False, "hash_seed_pinned_by_retrace": pinned_by_us,
                                          "started_by": "pth-hook"})
    finally:
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path
    children.remove_stale_children(path)
    try:
        session = RecordSession(path, pre, config)
    except OSError as exc:
        _cannot_create(path, exc)
        return
    atexit.register(session.close)
    session.start()
    from retracesoftware import sources
    sources.install(session)
    children.install(session, path)
    _enable_at_main(session)


def _enable_at_main(session) -> None:
    """Switch the main thread to INTERNAL when ``__main__``'s code starts.

    The rest of start-up (site, other .pth files, sitecustomize) is not the
    program: a replay started from the CLI does not run it. A one-shot
    profile hook sees the first frame of ``__main__`` module code (script,
    ``-c`` or ``-m``), turns recording on and removes itself.
    """
    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "<module>" \
                and frame.f_globals.get("__name__") == "__main__":
            sys.setprofile(None)
            session.program_starts()     # INTERNAL from here, as `session.run` does
    sys.setprofile(watch)
