"""Run a target program (script, ``-m module`` or ``-c code``) as ``__main__``.

The program must see what ``python app.py`` would show it: ``sys.argv``,
``sys.path[0]``, ``__main__``'s globals, and a traceback that starts at its own
code. Our frames (runpy, this module) are cut from tracebacks so stderr of a
failing program is the same with and without retrace.
"""
from __future__ import annotations

import io
import os
import runpy
import sys
import traceback
import types
from retracesoftware.utils.records import field, record


@record
class Target:
    """What to run: ``kind`` is "script", "module" or "code"."""

    kind: str
    value: str
    args: tuple[str, ...] = field(default_factory=tuple)
    #: for scripts: the absolute path (``value`` keeps the path as typed,
    #: which is what the program sees in ``sys.argv[0]``)
    path: str = ""

    @property
    def argv(self) -> list[str]:
        if self.kind == "script":
            return [self.value, *self.args]
        if self.kind == "module":
            # runpy replaces argv[0] by the module's file, as python -m does.
            return [self.value, *self.args]
        return ["-c", *self.args]

    def to_json(self) -> dict:
        return {"kind": self.kind, "value": self.value, "args": list(self.args), "path": self.path}

    @classmethod
    def from_json(cls, data: dict) -> "Target":
        return cls(data["kind"], data["value"], tuple(data["args"]), data.get("path", ""))


# Taken before anything is patched: the program's source is code, read live
# from disk, never data from the recording.
_open_source = io.open


class UsageError(Exception):
    """Bad command line; the CLI exits with code 2."""


PYTHON_NAMES = ("python", "python3")


def parse_command(words: list[str]) -> tuple[str | None, Target]:
    """Parse what follows ``--``: ``[python] (app.py | -m mod | -c code) args``.

    Returns ``(interpreter, target)``; interpreter is None for "this one".
    """
    if not words:
        raise UsageError("nothing to record after '--'; give a script, -m module or -c code")
    interpreter = None
    first = words[0]
    base = os.path.basename(first)
    if base in PYTHON_NAMES or base.startswith("python3.") or _same_file(first, sys.executable):
        interpreter = first
        _, words = split_interpreter_options(words[1:])
    if not words:
        raise UsageError("no program given to python; give a script, -m module or -c code")
    if words[0] == "-m":
        if len(words) < 2:
            raise UsageError("-m needs a module name")
        return interpreter, Target("module", words[1], tuple(words[2:]))
    if words[0] == "-c":
        if len(words) < 2:
            raise UsageError("-c needs a code string")
        return interpreter, Target("code", words[1], tuple(words[2:]))
    if words[0].startswith("-"):
        raise UsageError(f"unknown option {words[0]!r} before the program")
    script = words[0]
    if not os.path.exists(script):
        raise UsageError(f"can't open file {script!r}: No such file or directory")
    return interpreter, Target("script", script, tuple(words[1:]), os.path.abspath(script))


# Interpreter options: single letters that map to a sys.flags field (the
# count must match), and -W/-X with an argument. -u changes only buffering
# (the bytes written are the same). Others (-i, -x, -R...) are refused.
_FLAG_LETTERS = {"b": "bytes_warning", "B": "dont_write_bytecode", "d": "debug", "E": "ignore_environment",
                 "I": "isolated", "O": "optimize", "P": "safe_path", "q": "quiet", "s": "no_user_site",
                 "S": "no_site", "v": "verbose"}


def split_interpreter_options(words: list[str], check: bool = True) -> tuple[list[str], list[str]]:
    """Split ``[options..., program...]`` after the interpreter's name.

    Options must already be in effect in this interpreter (a recorded
    program runs in-process: it cannot get options of its own), so
    ``python -m retracesoftware -- python -B app.py`` is accepted when this
    interpreter runs with -B (or PYTHONDONTWRITEBYTECODE), and otherwise is
    a UsageError saying to put the option before ``-m retracesoftware``.
    Subprocesses of this Python recorded by retrace get their options that
    way (children.py; ``check=False``: only parse). Returns (options, rest)."""
    options = []
    i = 0
    while i < len(words) and words[i].startswith("-") and words[i] not in ("-m", "-c", "-", "--"):
        word = words[i]
        letters = word[1:]
        if letters[:1] in ("W", "X"):
            arg = letters[1:]
            taken = 1
            if not arg:
                if i + 1 >= len(words):
                    raise UsageError(f"interpreter option {word!r} needs an argument")
                arg = words[i + 1]
                taken = 2
            if not check:
                in_effect = True
            elif letters[0] == "W":
                in_effect = arg in sys.warnoptions
            else:
                key, _, value = arg.partition("=")
                in_effect = key in sys._xoptions and (not value or sys._xoptions[key] == value)
            if not in_effect:
                raise UsageError(f"interpreter option '-{letters[0]} {arg}' is not in effect here: "
                                 f"put it before -m retracesoftware (python -{letters[0]} {arg} -m retracesoftware ...)")
            options.extend(words[i:i + taken])
            i += taken
            continue
        counts: dict = {}
        for ch in letters:
            if ch == "u":
                continue
            if ch not in _FLAG_LETTERS or not hasattr(sys.flags, _FLAG_LETTERS[ch]):
                raise UsageError(f"interpreter option {word!r} is not supported under retrace")
            counts[ch] = counts.get(ch, 0) + 1
        for ch, n in (counts.items() if check else ()):
            have = int(getattr(sys.flags, _FLAG_LETTERS[ch]))
            # -I implies -E and -s; -O counts (-OO is 2).
            if have < n or (ch in "ObvdO" and have != n):
                raise UsageError(f"interpreter option {word!r} is not in effect here: put it before "
                                 f"-m retracesoftware (python {word} -m retracesoftware ...)")
        options.append(word)
        i += 1
    return options, words[i:]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def prepare_sys(target: Target) -> None:
    """Set sys.argv / sys.path[0] the way ``python <target>`` would."""
    sys.argv[:] = target.argv
    if target.kind == "script":
        sys.path[0:1] = [os.path.dirname(target.path)]
    else:
        sys.path[0:1] = [os.getcwd() if target.kind == "module" else ""]


def _main_module() -> types.ModuleType:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    return main


def execute(target: Target, debugger=None) -> None:
    """Run the program; exceptions (incl. SystemExit) propagate to the caller.

    With ``debugger`` (a ``pdb.Pdb``), the program runs under it and stops at
    its first line.
    """
    def run(code, globals_):
        if debugger is None:
            exec(code, globals_)
        else:
            debugger.run(code, globals_)

    if target.kind == "script":
        with _open_source(target.path, "rb") as fh:
            source = fh.read()
        code = compile(source, target.path, "exec")
        main = _main_module()
        main.__dict__.update(__file__=target.path, __cached__=None, __loader__=None,
                             __package__=None, __spec__=None)
        run(code, main.__dict__)
    elif target.kind == "module":
        if debugger is None:
            runpy._run_module_as_main(target.value, alter_argv=True)  # what `python -m` uses
            return
        mod_name, spec, code = runpy._get_module_details(target.value)
        sys.argv[0] = spec.origin
        main = _main_module()
        main.__dict__.update(__name__="__main__", __file__=spec.origin, __cached__=spec.cached,
                             __loader__=spec.loader, __package__=spec.parent, __spec__=spec)
        run(code, main.__dict__)
    else:
        main = _main_module()
        main.__dict__.update(__package__=None, __spec__=None, __loader__=None)
        run(compile(target.value, "<string>", "exec"), main.__dict__)


_OUR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_OUR_FILES = {runpy.__file__}


def _is_ours(filename: str) -> bool:
    filename = os.path.abspath(filename)
    return filename.startswith(_OUR_DIR + "retracesoftware" + os.sep) or filename in _OUR_FILES


def report_exception(exc: BaseException) -> int:
    """Print an uncaught exception as the interpreter would; return the exit code."""
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code & 0xFF if code >= 0 else code & 0xFF
        try:
            print(code, file=sys.stderr)
        except Exception:
            pass
        return 1
    tb = exc.__traceback__
    while tb is not None and _is_ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    # Frames of ours further in (the wrapper a signal handler runs through,
    # install/signals.py) are not the program's either.
    link = tb
    while link is not None:
        while link.tb_next is not None and _is_ours(link.tb_next.tb_frame.f_code.co_filename):
            link.tb_next = link.tb_next.tb_next
        link = link.tb_next
    exc.__traceback__ = tb
    try:
        sys.excepthook(type(exc), exc, tb)
    except Exception:
        traceback.print_exception(type(exc), exc, tb)
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 1
