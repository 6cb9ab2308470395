"""Command line: ``python -m retracesoftware ...``.

    python -m retracesoftware --recording run.bin [options] -- python app.py args   # record
    python -m retracesoftware --recording run.bin [options]                         # replay
    python -m retracesoftware inspect run.bin [--json]
    python -m retracesoftware enable-hook | disable-hook

Our own messages go to stderr, prefixed ``retrace:``; errors are one line
(`retrace: error: <what> (<where>) — <what to do>`), with a traceback only
under ``--debug``. Exit codes: the program's own on record and on a faithful
replay; 2 usage; 3 replay divergence; 4 bad or unsupported recording.
"""
from __future__ import annotations

import os
import sys

from retracesoftware.runner import UsageError

USAGE = """\
usage: python -m retracesoftware --recording PATH [options] -- [python] (script.py | -m module | -c code) [args...]
       python -m retracesoftware --recording PATH [options]            (replay)
       python -m retracesoftware inspect PATH [--json]
       python -m retracesoftware events PATH [--thread N] [--grep TEXT] [--kind K] [--from N --to M] [--json]
       python -m retracesoftware diff A B [--json]
       python -m retracesoftware fork PATH --at N (--result JSON | --raise 'Exc(args)') [--record NEW]
       python -m retracesoftware enable-hook | disable-hook
       python -m retracesoftware dap                                   (Debug Adapter Protocol on stdin/stdout)
       python -m retracesoftware (report | trace | summary) PATH [-o OUT] [options]
       python -m retracesoftware mcp                       (MCP server on stdio, offline)
       python -m retracesoftware boundary [--grep TEXT] [--json]   (what is recorded, and how)
       (python -m retracesoftware COMMAND --help for a command's options)

options:
  --recording PATH   recording file; {pid} and strftime patterns (%Y%m%d-%H%M%S) are expanded when recording
  --force            replay even if the Python version or the program's sources differ
  --debug            show tracebacks of retrace's own errors
  --verbose          say what retrace is doing (stderr)
  --pdb              replay under pdb: stop at the first line of the program (and at a divergence)
  --stacks           record a stack trace with every boundary call (bigger recordings, better divergence reports)
  --schedule         record where threads switch in pure Python, so data races replay exactly (docs/THREADS.md;
                     the record runs slower: every instruction of program code is counted)
  --chaos            with --schedule: also switch threads at random points while recording, so rare
                     interleavings show up
  --pid PID          replay the child process PID of a recording (see inspect)
  --redact NAME      record the environment variable NAME as a redaction marker instead of its value (repeatable;
                     secret-looking names are redacted by default, see docs/RELIABILITY.md "Sharing recordings")
  --no-redact NAME   record NAME's value even though its name looks secret (repeatable)
  --trust            replay a recording of python -c CODE: runs the code stored in the recording
  --no-check-output  replay without comparing what the program writes to stdout/stderr with the recording
  --no-compress      write the recording's frames uncompressed (default: zstd per frame)
  --test NODEID      replay a pytest session recording (pytest --retrace-record) for one test: print only its
                     report section; with --pdb, stop at the test's first line
  --remap OLD=NEW    read code recorded under OLD from NEW on replay (repeatable; the project root is remapped by itself)
  --thread-timeout S seconds a replay may wait with every thread blocked before reporting a divergence (default 10)
"""

EXIT_USAGE = 2
EXIT_DIVERGENCE = 3
EXIT_BAD_RECORDING = 4


class Options:
    def __init__(self) -> None:
        self.recording: str | None = None
        self.force = False
        self.debug = False
        self.verbose = False
        self.pdb = False
        self.stacks = False
        self.schedule = False
        self.chaos = False
        self.compress = True
        self.pid: int | None = None
        self.redact: list[str] = []
        self.no_redact: list[str] = []
        self.trust = False
        self.thread_timeout = 10.0
        self.command: list[str] | None = None
        self.json = False
        self.test: str | None = None
        self.remap: list[tuple[str, str]] = []
        self.check_output = True


def parse_args(argv: list[str]) -> tuple[str, Options]:
    """Return (verb, options); verb is record, replay, inspect, enable-hook, disable-hook, help."""
    opts = Options()
    if "--" in argv:
        i = argv.index("--")
        argv, opts.command = argv[:i], argv[i + 1:]
    verb = None
    it = iter(argv)
    positional: list[str] = []

    def value(flag: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise UsageError(f"{flag} needs a value") from None

    for arg in it:
        if arg in ("-h", "--help"):
            return "help", opts
        if arg.startswith("--") and "=" in arg:
            arg, inline = arg.split("=", 1)
            it = _prepend(inline, it)
        if arg == "--recording":
            opts.recording = value(arg)
        elif arg == "--force":
            opts.force = True
        elif arg == "--debug":
            opts.debug = True
        elif arg in ("--verbose", "-v"):
            opts.verbose = True
        elif arg == "--pdb":
            opts.pdb = True
        elif arg == "--stacks":
            opts.stacks = True
        elif arg == "--schedule":
            opts.schedule = True
        elif arg == "--chaos":
            opts.schedule = opts.chaos = True
        elif arg == "--no-check-output":
            opts.check_output = False
        elif arg == "--no-compress":
            opts.compress = False
        elif arg == "--json":
            opts.json = True
        elif arg == "--pid":
            raw = value(arg)
            try:
                opts.pid = int(raw)
            except ValueError:
                raise UsageError(f"--pid needs a process id (an integer), got {raw!r}") from None
        elif arg == "--redact":
            opts.redact.append(value(arg))
        elif arg == "--test":
            opts.test = value(arg)
        elif arg == "--remap":
            raw = value(arg)
            old, sep, new = raw.partition("=")
            if not sep or not old or not new:
                raise UsageError(f"--remap needs OLD=NEW (two paths), got {raw!r}")
            opts.remap.append((old, new))
        elif arg == "--no-redact":
            opts.no_redact.append(value(arg))
        elif arg == "--trust":
            opts.trust = True
        elif arg == "--thread-timeout":
            raw = value(arg)
            try:
                opts.thread_timeout = float(raw)
            except ValueError:
                raise UsageError(f"--thread-timeout needs seconds, got {raw!r}") from None
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r}")
        else:
            positional.append(arg)

    if positional:
        verb = positional[0]
        if verb not in ("inspect", "enable-hook", "disable-hook", "record", "replay", "dap"):
            if opts.command is None and verb.endswith(".py"):
                raise UsageError(
                    f"put '--' before the program to record: python -m retracesoftware "
                    f"--recording PATH -- python {' '.join(positional)}")
            raise UsageError(f"unknown command {verb!r}")
        rest = positional[1:]
        if verb == "inspect":
            if rest:
                opts.recording = rest[0]
                rest = rest[1:]
            if not opts.recording:
                raise UsageError("inspect needs a recording path")
        if rest:
            raise UsageError(f"unexpected argument {rest[0]!r}")
        if verb in ("record", "replay"):
            verb = None
    if verb is None:
        if opts.recording is None:
            if opts.command is not None:
                raise UsageError("--recording PATH is required to record")
            return "help", opts
        verb = "record" if opts.command is not None else "replay"
    return verb, opts


def _prepend(first, it):
    yield first
    yield from it


def _forget_cwd_on_path() -> None:
    """Reading or replaying a recording imports nothing from the current
    directory (``python -m`` put it first on sys.path): a recording's folder
    may hold files named like modules we import lazily."""
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and p != cwd]


def error_line(what: str) -> str:
    from retracesoftware.install.masking import mask
    return f"retrace: error: {mask(what)}"


#: subcommands with their own argparse CLI: name -> module with main(argv) -> int
VIEWS = {
    "events": "retracesoftware.views.events",
    "diff": "retracesoftware.views.diff",
    "fork": "retracesoftware.views.fork",
    "report": "retracesoftware.views.report",
    "trace": "retracesoftware.views.trace",
    "summary": "retracesoftware.views.summary",
    "mcp": "retracesoftware.views.mcp_server",
    "boundary": "retracesoftware.views.boundary",
}


def _report_error(exc: Exception, debug: bool) -> int:
    """One line for an error of ours (its exit code), or an internal error
    (exit 1; the traceback with --debug)."""
    from retracesoftware.utils.errors import RetraceError
    if debug:
        import traceback
        traceback.print_exc()
    if isinstance(exc, RetraceError):
        _say_error(error_line(str(exc)))
        return exc.exit_code
    _say_error(error_line(f"internal error: {type(exc).__name__}: {exc} — rerun with --debug and report it"))
    return 1


def _say_error(line: str) -> None:
    """To the stderr the user started us with, even when the program pointed
    fd 2 or sys.stderr elsewhere (install/report.py)."""
    from retracesoftware.install import report
    if report.fd() is None:
        print(line, file=sys.stderr)
    else:
        report.write(line + "\n")


def _run_view(argv: list[str]) -> int:
    import importlib
    debug = "--debug" in argv
    try:
        return importlib.import_module(VIEWS[argv[0]]).main(argv[1:])
    except SystemExit as exc:      # argparse --help
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        print(error_line(f"{exc} — see python -m retracesoftware {argv[0]} --help"), file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        return _report_error(exc, debug)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in VIEWS:
        _forget_cwd_on_path()
        return _run_view(argv)
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    try:
        verb, opts = parse_args(argv)
    except UsageError as exc:
        print(error_line(f"{exc} — see python -m retracesoftware --help"), file=sys.stderr)
        return EXIT_USAGE
    if verb == "help":
        sys.stdout.write(USAGE)
        return 0 if not argv or argv[0] in ("-h", "--help") else EXIT_USAGE
    if verb != "record":
        _forget_cwd_on_path()
    try:
        if verb == "record":
            from retracesoftware.record_replay import record_main
            return record_main(opts)
        if verb == "replay":
            from retracesoftware.record_replay import replay_main
            return replay_main(opts)
        if verb == "dap":
            from retracesoftware.debugger.dap import main as dap_main
            return dap_main()
        if verb == "inspect":
            from retracesoftware.inspect_cmd import inspect_main
            return inspect_main(opts)
        from retracesoftware import hook
        return hook.enable_main(opts) if verb == "enable-hook" else hook.disable_main(opts)
    except UsageError as exc:
        _say_error(error_line(str(exc)))
        return EXIT_USAGE
    except Exception as exc:  # our own errors only: the program's pass through session
        return _report_error(exc, debug)
