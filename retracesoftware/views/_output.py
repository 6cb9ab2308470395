"""What the report/trace/summary/mcp commands share: argument parsing in the CLI's style
(``retrace: error: …``, exit 2), progress on stderr, output files."""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import time

from retracesoftware.runner import UsageError


class ViewArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors become the CLI's one-line errors (exit 2)."""

    def error(self, message):
        raise UsageError(f"{self.prog.split()[-1]}: {message}")


def parser(command: str, description: str) -> ViewArgumentParser:
    p = ViewArgumentParser(prog=f"python -m retracesoftware {command}", description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks of retrace's own errors")
    return p


def check_recording(path: str) -> None:
    from retracesoftware.utils.errors import RecordingFormatError
    if not os.path.exists(path):
        raise RecordingFormatError(f"recording {path} does not exist — check the path")
    if os.path.isdir(path):
        raise RecordingFormatError(f"{path} is a directory, not a recording — give the recording file")


class Progress:
    """``progress(done, total)``: a bar on stderr when it is a terminal, a
    line every 10 s otherwise; nothing for work that ends within a second."""

    def __init__(self, label: str, stream=None, *, quiet=False):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = False
        try:
            self.tty = self.stream.isatty()
        except Exception:
            self.tty = False

    def __call__(self, done, total):
        if self.quiet:
            return
        now = time.monotonic()
        if now - self.started < 1.0 and not self.shown:
            return
        if self.tty:
            if now - self.last < 0.1 and done < total:
                return
            fraction = min(1.0, done / total) if total else 1.0
            width = 30
            filled = int(width * fraction)
            self.stream.write(f"\rretrace: {self.label} [{'#' * filled}{' ' * (width - filled)}] "
                              f"{fraction * 100:5.1f}%")
            self.stream.flush()
        else:
            if now - max(self.last, self.started) < 10.0:
                return
            fraction = min(1.0, done / total) if total else 1.0
            self.stream.write(f"retrace: {self.label}: {fraction * 100:.0f}%\n")
            self.stream.flush()
        self.last = now
        self.shown = True

    def done(self):
        if self.shown and self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def open_output(path: str, mode: str = "wt"):
    """A file for a view's output; ``-`` is stdout; ``.gz`` is gzip-compressed."""
    if path == "-":
        return _Unclosed(sys.stdout)
    if path.endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8" if "t" in mode else None, compresslevel=6)
    return open(path, mode, encoding="utf-8" if "t" in mode else None)


class _Unclosed:
    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self.stream

    def __exit__(self, *exc):
        self.stream.flush()

    def write(self, text):
        return self.stream.write(text)


def say(message: str) -> None:
    sys.stderr.write(f"retrace: {message}\n")
    sys.stderr.flush()
