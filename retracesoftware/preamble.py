"""The recording preamble (DESIGN §5): who recorded what, where, with which code.

Built at record start, written as the first frame, checked at replay start.
The environment is *not* in the preamble: environment reads are recorded as
events when the program makes them, so a recording holds no value the
program never read.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time

from retracesoftware.utils.errors import VersionMismatch

#: Version of the preamble's schema (the frame format has its own version).
PREAMBLE_VERSION = 1


def file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def build(target, *, hash_seed: str, config_digest: str, options: dict) -> dict:
    from retracesoftware import __version__

    sources = {}
    if target.kind == "script":
        digest = file_digest(target.path)
        if digest:
            sources[target.path] = digest
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
    for path, digest in sorted(preamble.get("sources", {}).items()):
        now = file_digest(path)
        if now is None:
            problems.append(f"source file {path} is missing")
        elif now != digest:
            problems.append(f"source file {path} changed since the recording")
    if config_digest is not None and preamble.get("config_digest") not in (None, config_digest):
        problems.append("boundary configs (configs/, .retrace/modules, RETRACE_MODULES_PATH) differ from the recording's")
    if problems and not force:
        raise VersionMismatch(f"{problems[0]} — replay on a matching setup, or pass --force to try anyway")
    return problems
