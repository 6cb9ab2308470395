"""Where our own reports go: the stderr the user started the process with.

A program may point descriptor 2 somewhere else (pytest's default capture
``dup2``s a temporary file onto fds 1 and 2; on replay `output.py` then
points the real fd 2 at ``/dev/null``) or replace ``sys.stderr``. A
divergence report or an error line written there would be lost, and the
user would see exit 3 with nothing said. So `reserve` takes, when our
runtime starts (before the program runs), a private close-on-exec copy of
fd 2, and `write` writes our lines there.

The copy is made at a high descriptor number (`BASE` or above), so the
descriptor numbers the program gets from ``open``/``socket``/``pipe`` are
the ones it gets in a plain run. Without a copy (it could not be made, or
the program closed it) our lines go to ``sys.stderr`` as before.
"""
from __future__ import annotations

import posix
import sys

#: the lowest descriptor number our private copy of fd 2 may take
BASE = 255

# Private references, taken before any patching.
_real_write = posix.write
_fd: int | None = None
# Bound to the interpreter's own stderr object when our runtime starts:
# the program may replace sys.stderr, and its class's write() is the
# output check's gateway once the boundary is installed.
_stream_write = _stream_flush = None
_encoding = "utf-8"


def reserve() -> None:
    """Keep a private copy of this process's fd 2 (once per process; a
    forked child inherits it, an exec'd program does not)."""
    global _fd
    if _fd is not None:
        return
    try:
        import fcntl
    except ImportError:
        return
    for base in (BASE, 10):
        try:
            _fd = fcntl.fcntl(2, fcntl.F_DUPFD_CLOEXEC, base)
            break
        except (OSError, ValueError):
            continue
    _bind(sys.stderr)


def _bind(stream) -> None:
    global _stream_write, _stream_flush, _encoding
    try:
        _stream_write, _stream_flush = stream.write, stream.flush
        _encoding = getattr(stream, "encoding", None) or "utf-8"
    except AttributeError:      # no stderr (None)
        pass


_bind(sys.stderr)


def fd() -> int | None:
    """The private copy of the user's stderr (None: there is none)."""
    return _fd


def write(text: str) -> None:
    """Write our *text* (whole lines) to the user's stderr, after what the
    interpreter's own ``sys.stderr`` holds in its buffer."""
    if _stream_flush is not None:
        try:
            _stream_flush()
        except Exception:
            pass
    target = _fd
    if target is not None:
        try:
            data = text.encode(_encoding, "backslashreplace")
        except LookupError:
            data = text.encode("utf-8", "backslashreplace")
        view = memoryview(data)
        try:
            while view:
                n = _real_write(target, view)
                if not n:
                    break
                view = view[n:]
            return
        except OSError:
            if len(view) != len(data):
                return          # part of it went out: do not write it twice
    try:
        _stream_write(text)
        _stream_flush()
    except Exception:
        pass
