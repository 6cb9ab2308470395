"""The recording preamble (DESIGN §5): who recorded what, where, with which code.

Built at record start, written as the first frame, checked at replay start.
The environment is *not* in the preamble: environment reads are recorded as
events when the program makes them, so a recording holds no value the
program never read.
"""
from __future__ import annotations

import os
import re
import sys
import time

from retracesoftware.utils.errors import RecordingFormatError, VersionMismatch

#: Version of the preamble's schema (the frame format has its own version).
PREAMBLE_VERSION = 1


# Private references: a digest is our bookkeeping, never a call through the
# program's patches of os (blockbuster, mocks).
_os_open, _os_fstat, _os_read, _os_close = os.open, os.fstat, os.read, os.close
_O_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def file_digest(path: str) -> str | None:
    """sha256 of a regular file's bytes (None if it is missing or not a
    regular file: a path from a recording may name a FIFO or /dev/zero)."""
    import stat
    try:
        fd = _os_open(path, _O_READ)
    except (OSError, ValueError, TypeError):
        return None
    try:
        if not stat.S_ISREG(_os_fstat(fd).st_mode):
            return None
        import hashlib     # (here: a run of python -c does not load OpenSSL)
        h = hashlib.sha256()
        while True:
            chunk = _os_read(fd, 1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
    except OSError:
        return None
    finally:
        _os_close(fd)


def build(target, *, hash_seed: str, config_digest: str, options: dict) -> dict:
    from retracesoftware import __version__

    sources = {}
    if target.kind == "script":
        # Keyed by the path the replay resolves (recorded cwd + the script
        # as typed: what inspect shows), never by a path of its own.
        digest = file_digest(target.path)
        if digest:
            sources[script_path(os.getcwd(), target.value)] = digest
    return {
        "preamble_version": PREAMBLE_VERSION,
        "retrace_version": __version__,
        "python_version": sys.version,
        "python_version_info": list(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "argv": list(target.argv),
        "target": target.to_json(),
        "cwd": os.getcwd(),
        "sys_path": list(sys.path),
        "flags": {name: getattr(sys.flags, name) for name in dir(sys.flags)
                  if not name.startswith("_") and isinstance(getattr(sys.flags, name), int)},
        "hash_seed": hash_seed,
        "config_digest": config_digest,
        "sources": sources,
        "pid": os.getpid(),
        "started_at": time.time(),
        "options": options,
    }


def check(preamble: dict, *, config_digest: str | None, force: bool) -> list[str]:
    """Raise VersionMismatch naming what differs (or return the differences under --force)."""
    problems = []
    rec = tuple(preamble.get("python_version_info", ())[:2])
    if rec != tuple(sys.version_info[:2]):
        problems.append(
            f"recorded with Python {'.'.join(map(str, preamble.get('python_version_info', ['?'])))}, "
            f"this is Python {'.'.join(map(str, sys.version_info[:3]))}")
    if preamble.get("implementation", "cpython") != sys.implementation.name:
        problems.append(f"recorded with {preamble.get('implementation')}, this is {sys.implementation.name}")
    # The program's sources: check_program (the script) and sources.py
    # (every module it imports, checked as the replay imports it).
    if config_digest is not None and preamble.get("config_digest") not in (None, config_digest):
        problems.append("boundary configs (configs/, .retrace/modules, RETRACE_MODULES_PATH) differ from the recording's")
    if problems and not force:
        raise VersionMismatch(f"{problems[0]} — replay on a matching setup, or pass --force to try anyway")
    return problems


# ------------------------------------------------------------------ trust
# A recording is data, never a program (DESIGN §10, docs/RELIABILITY.md
# "Sharing recordings"): what the replay runs is resolved here from the
# recorded target, the same thing inspect shows; every field is checked
# before anything uses it.

#: A child recording's file name inside its parent's ``.children`` folder.
CHILD_NAME = re.compile(r"^\d{1,10}-\d{1,10}\.bin$")
MAX_SEED = 2**32 - 1
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_KINDS = ("script", "module", "code")


def script_path(cwd: str, value: str) -> str:
    """The script a recorded target names: its path as typed, relative to the
    recorded working directory."""
    return os.path.normpath(os.path.join(cwd, value))


def hash_seed(preamble: dict) -> str:
    """The recorded PYTHONHASHSEED as the decimal string to pin (validated)."""
    seed = preamble.get("hash_seed")
    if isinstance(seed, str) and seed.isascii() and seed.isdigit() and len(seed) <= 10:
        seed = int(seed)
    if type(seed) is not int or not 0 <= seed <= MAX_SEED:
        raise _bad("hash_seed", f"an integer in [0, {MAX_SEED}]", seed)
    return str(seed)


def _bad(field: str, expected: str, got) -> RecordingFormatError:
    from retracesoftware.install.masking import printable
    shown = printable(repr(got))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return RecordingFormatError(
        f"bad recording: preamble field {field} is {shown}, expected {expected} "
        f"— the file was not written by retracesoftware or was altered; re-record")


def _is_str_list(v, limit=1 << 16) -> bool:
    return type(v) is list and len(v) <= limit and all(type(x) is str for x in v)


def validate(preamble) -> dict:
    """Check a preamble against its schema (types and ranges) before any of it
    is used. Raises RecordingFormatError (exit 4, one line) naming the field."""
    if type(preamble) is not dict:
        raise RecordingFormatError("bad preamble: not a retrace recording preamble (not a map) "
                                   "— not a recording made by retracesoftware")
    target = preamble.get("target")
    if type(target) is not dict:
        raise _bad("target", "a map", target)
    kind = target.get("kind")
    if kind not in _KINDS:
        raise _bad("target.kind", "script, module or code", kind)
    value = target.get("value")
    if type(value) is not str or not value or "\x00" in value:
        raise _bad("target.value", "a non-empty string", value)
    if kind == "module" and not _MODULE_NAME.match(value):
        raise _bad("target.value", "a module name", value)
    if not _is_str_list(target.get("args", [])):
        raise _bad("target.args", "a list of strings", target.get("args"))
    if type(target.get("path", "")) is not str:
        raise _bad("target.path", "a string", target.get("path"))
    for name in ("cwd", "python_version", "executable", "implementation", "config_digest",
                 "retrace_version"):
        if name in preamble and preamble[name] is not None and type(preamble[name]) is not str:
            raise _bad(name, "a string", preamble[name])
    cwd = preamble.get("cwd")
    if type(cwd) is not str or not os.path.isabs(cwd) or "\x00" in cwd:
        raise _bad("cwd", "an absolute path", cwd)
    for name in ("argv", "sys_path"):
        if name in preamble and not _is_str_list(preamble[name]):
            raise _bad(name, "a list of strings", preamble[name])
    if any("\x00" in p for p in preamble.get("sys_path", ())):
        raise _bad("sys_path", "paths", preamble.get("sys_path"))
    info = preamble.get("python_version_info", [])
    if type(info) is not list or len(info) > 5 or not all(type(x) is int for x in info):
        raise _bad("python_version_info", "a list of integers", info)
    hash_seed(preamble)
    sources = preamble.get("sources", {})
    if type(sources) is not dict or not all(type(k) is str and type(v) is str and len(v) <= 128
                                            for k, v in sources.items()):
        raise _bad("sources", "a map of paths to digests", sources)
    for name in ("pid",):
        if name in preamble and (type(preamble[name]) is not int or not 0 <= preamble[name] < 1 << 32):
            raise _bad(name, "a process id", preamble[name])
    started = preamble.get("started_at", 0)
    if type(started) not in (int, float) or not -1e11 < started < 1e11:
        raise _bad("started_at", "a time in seconds", started)
    options = preamble.get("options", {})
    if type(options) is not dict:
        raise _bad("options", "a map", options)
    redacted = options.get("redacted", [])
    if not _is_str_list(redacted, 4096):
        raise _bad("options.redacted", "a list of names", redacted)
    flags = preamble.get("flags", {})
    if type(flags) is not dict or not all(type(k) is str and type(v) in (int, bool) for k, v in flags.items()):
        raise _bad("flags", "a map of interpreter flags", flags)
    process = preamble.get("process")
    if process is not None:
        if type(process) is not dict:
            raise _bad("process", "a map", process)
        name = process.get("name")
        if name is not None and (type(name) is not str or not CHILD_NAME.match(name)):
            raise _bad("process.name", "a child recording name (PID-N.bin)", name)
    return preamble


def resolve_target(preamble: dict):
    """The program a replay runs, resolved on this machine from the recorded
    target alone: a script's path as typed joined to the recorded cwd, or a
    module name (found on the recorded sys.path), or code (``--trust``).
    Never the recording's own idea of an absolute path."""
    from retracesoftware.runner import Target
    target = preamble["target"]
    kind, value = target["kind"], target["value"]
    args = tuple(target.get("args", ()))
    if kind == "script":
        return Target("script", value, args, script_path(preamble["cwd"], value))
    return Target(kind, value, args)


def check_program(preamble: dict, target, *, force: bool) -> list[str]:
    """The script a replay would run must be the recorded one: its digest is
    in the preamble and matches the file on disk (else exit 4)."""
    if target.kind != "script":
        return []
    from retracesoftware.install.masking import printable
    recorded = preamble.get("sources", {}).get(target.path)
    now = file_digest(target.path)
    shown = printable(target.path)
    if recorded is None:
        problem = f"the recording has no digest of its program {shown}"
    elif now is None:
        problem = f"source file {shown} is missing (recorded program: python {printable(target.value)})"
    elif now != recorded:
        problem = f"source file {shown} differs from the recorded one"
    else:
        return []
    if force and recorded is not None:
        return [problem]
    todo = ("replay with the program's recorded sources, or pass --force to try anyway" if recorded is not None
            else "this recording cannot say which program it ran; re-record")
    raise VersionMismatch(f"{problem} — {todo}")
