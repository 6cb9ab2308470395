"""Started from the ``.pth`` hook when ``RETRACE=1``: record this process.

Runs during ``site`` start-up, before ``__main__``. The program is whatever
the interpreter was asked to run (``sys.orig_argv``); the recording is the
same as ``python -m retracesoftware --recording … -- <that command>`` makes
and replays with ``python -m retracesoftware --recording PATH``.
"""
from __future__ import annotations

import os
import sys

_SKIP_MODULES = ("pip", "retracesoftware", "ensurepip", "venv")


def _command():
    """(kind, value, args) of what this interpreter runs, or None to skip."""
    argv = list(getattr(sys, "orig_argv", sys.argv))[1:]
    while argv and argv[0].startswith("-") and argv[0] not in ("-m", "-c"):
        if argv[0] in ("-X", "-W"):
            argv = argv[2:]
        else:
            argv = argv[1:]
    if not argv:
        return None  # interactive interpreter: nothing to replay
    if argv[0] == "-m":
        if len(argv) < 2 or argv[1].split(".")[0] in _SKIP_MODULES:
            return None
        return ["-m", *argv[1:]]
    if argv[0] == "-c":
        return argv
    script = argv[0]
    if os.path.basename(script).startswith("pip"):
        return None
    return argv


_started = False


def start() -> None:
    # site may process a site-packages folder (and so our .pth) twice.
    global _started
    if _started:
        return
    _started = True
    command = _command()
    if command is None:
        return
    from retracesoftware.cli import Options
    from retracesoftware.record_replay import start_recording_in_place

    opts = Options()
    opts.recording = os.environ.get("RETRACE_RECORDING") or "retrace-{pid}.bin"
    opts.command = command
    try:
        start_recording_in_place(opts)
    except Exception as exc:  # never take the user's program down
        sys.stderr.write(f"retrace: warning: recording not started: {exc}\n")
