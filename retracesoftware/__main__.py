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
    env["RETRACE_PINNED_HASHSEED"] = seed    # session._HASHSEED_MARK
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def main(argv=None) -> int:
    """The ``retrace`` console script and ``python -m retracesoftware``."""
    if argv is None:
        _pin_hash_seed_first()
    from retracesoftware.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
