"""`python -m retracesoftware ...` — see retracesoftware/cli.py."""
import os
import sys

#: options of the main command that take a value (cli.parse_args)
_VALUE_OPTIONS = ("--recording", "--pid", "--redact", "--no-redact", "--test", "--remap", "--thread-timeout")


def _plainly_records(argv) -> bool:
    """True when ``argv`` is certainly a record command (cli.parse_args would
    say "record"): ``[options] [record] --recording PATH [options] -- program``.
    Anything less certain says False and is left to cli/session."""
    if "--" not in argv:
        return False
    head = argv[:argv.index("--")]
    positional = []
    has_recording = False
    it = iter(head)
    for arg in it:
        if arg in ("-h", "--help"):
            return False
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name == "--recording":
            has_recording = True
        if name in _VALUE_OPTIONS:
            if "=" not in arg and next(it, None) is None:
                return False
        elif not arg.startswith("-"):
            positional.append(arg)
    return has_recording and positional in ([], ["record"])


def _pin_hash_seed_first() -> None:
    """A recording runs with a known PYTHONHASHSEED; when none is set the
    interpreter must restart with one (session.py). Doing it here, before
    retrace imports anything, makes that restart cost one bare interpreter
    start instead of one with our imports. Same environment as session.py's
    own re-exec (which still runs when this one did not)."""
    seed = os.environ.get("PYTHONHASHSEED")
    if (seed is not None and seed != "random") or not _plainly_records(sys.argv[1:]):
        return
    seed = str(int.from_bytes(os.urandom(8), "little") % (2**32 - 1) + 1)   # 1 .. 2**32-1
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = seed
    env["RETRACE_PINNED_HASHSEED"] = seed    # record_replay._HASHSEED_MARK (not imported: start-up)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def _plainly_replays(argv) -> bool:
    """True when ``argv`` is certainly a replay of one recording file
    (cli.parse_args would say "replay", no --pid/--test: the file named is
    the one replayed): ``[options] [replay] --recording PATH [options]``."""
    if "--" in argv:
        return False
    positional = []
    has_recording = False
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            return False
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name in ("--pid", "--test"):
            return False
        if name == "--recording":
            has_recording = True
        if name in _VALUE_OPTIONS:
            if "=" not in arg and next(it, None) is None:
                return False
        elif not arg.startswith("-"):
            positional.append(arg)
    return has_recording and positional in ([], ["replay"])


def _recording_arg(argv):
    for i, arg in enumerate(argv):
        if arg == "--recording" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--recording="):
            return arg.split("=", 1)[1]
    return None


def _pin_replay_hash_seed_first() -> None:
    """A replay runs with the recording's PYTHONHASHSEED; when this
    interpreter has another one it must restart (record_replay.replay_main).
    Read the seed here, with the stream reader only, and restart before the
    runtime's imports: the first image then costs one interpreter start and
    the reader's import instead of one with our whole runtime. Anything
    unusual (no file, a damaged or foreign preamble, a bad seed) is left to
    replay_main, which checks and reports it, and re-execs there as before."""
    argv = sys.argv[1:]
    pinned = os.environ.get("RETRACE_PINNED_HASHSEED")
    if (pinned is not None and pinned == os.environ.get("PYTHONHASHSEED")) or not _plainly_replays(argv):
        return     # (restarted by us already: replay_main checks the seed)
    path = _recording_arg(argv)
    if not path:
        return
    # What replay reads imports nothing from the current directory
    # (cli._forget_cwd_on_path, done again there).
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and p != cwd]
    try:
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            return
        from retracesoftware.stream import StreamReader
        reader = StreamReader(path)
        try:
            pre = reader.preamble
        finally:
            reader.close()
        seed = pre.get("hash_seed") if type(pre) is dict else None
        if type(seed) is str and seed.isascii() and seed.isdigit() and len(seed) <= 10:
            seed = int(seed)
        if type(seed) is not int or not 0 <= seed <= 2**32 - 1:
            return
    except Exception:
        return
    seed = str(seed)
    if os.environ.get("PYTHONHASHSEED") == seed:
        return
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = seed
    env["RETRACE_PINNED_HASHSEED"] = seed    # record_replay._HASHSEED_MARK (not imported: start-up)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def main(argv=None) -> int:
    """The ``retrace`` console script and ``python -m retracesoftware``."""
    if argv is None:
        _pin_hash_seed_first()
        _pin_replay_hash_seed_first()
    from retracesoftware.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
