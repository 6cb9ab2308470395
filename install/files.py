"""Builtin ``open()`` whose bytes cross the boundary through ``os`` functions.

CPython's ``_io.FileIO`` does its system calls in C (``open``, ``read``,
``write``, ``lseek``, ``fstat``), where no Python-level patch can see them.
``_pyio.FileIO`` implements the same class in Python on top of ``os.open``,
``os.read``, ``os.write``, ``os.lseek``, ``os.fstat`` and ``os.close`` — the
very functions the ``posix`` config patches. So under retrace ``open()``
builds the raw file from a ``_pyio.FileIO`` subclass and wraps it in the C
buffered and text classes, exactly as ``_io.open`` would: every byte the
program reads is recorded by the ``os`` boundary and comes back from the
recording on replay, and writes never touch the disk on replay.

File objects created before install (``sys.stdout`` …) are the interpreter's
own C objects and stay untouched: program output is real output on replay.
"""
from __future__ import annotations

import _io
import _pyio

# `os` as the boundary sees it (install/isolation.py): names resolve in
# posix at each call, so a program's own patch of ``os.read`` (blockbuster)
# never sees the reads a plain C open() would make without it.
from retracesoftware.install.isolation import isolated_class, posix_view as os
from retracesoftware.install.substitutes import poses_as

# Private references taken before any patching (the runtime never calls
# through a patched attribute).
_real_close = os.close
_text_encoding = _io.text_encoding
_BufferedRandom = _io.BufferedRandom
_BufferedWriter = _io.BufferedWriter
_BufferedReader = _io.BufferedReader
_TextIOWrapper = _io.TextIOWrapper
DEFAULT_BUFFER_SIZE = _io.DEFAULT_BUFFER_SIZE

#: "record": a file left to the garbage collector is closed for real but not
#: recorded (collection time differs between record and replay); "replay":
#: its descriptor was never real, so nothing is closed.
finalizer_mode = "record"


class FileIO(isolated_class(_pyio.FileIO, os=os)):
    """``_pyio.FileIO`` with a finalizer that stays off the recording."""

    # isinstance(f, io.FileIO) and singledispatch on io.FileIO (aiofiles)
    # accept it, as they accept open()'s raw file without retrace.
    __class__ = poses_as(_io.FileIO)

    def __del__(self):
        fd = getattr(self, "_fd", -1)
        # _pyio.FileIO.close() leaves _fd set (it tracks closing in IOBase),
        # so a closed file must not close its old descriptor number again.
        if fd >= 0 and getattr(self, "_closefd", False) and not self.closed:
            self._fd = -1
            if finalizer_mode == "record":
                try:
                    _real_close(fd)
                except OSError:
                    pass


FileIO.__module__ = "_io"
FileIO.__qualname__ = FileIO.__name__ = "FileIO"


def open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None,
         closefd=True, opener=None):
    """``io.open`` with the raw layer in Python (see module docstring)."""
    if not isinstance(file, int):
        file = os.fspath(file)
    if not isinstance(file, (str, bytes, int)):
        raise TypeError("invalid file: %r" % file)
    if not isinstance(mode, str):
        raise TypeError("open() argument 'mode' must be str, not %s" % type(mode).__name__)
    if not isinstance(buffering, int):
        raise TypeError("'%s' object cannot be interpreted as an integer" % type(buffering).__name__)
    if encoding is not None and not isinstance(encoding, str):
        raise TypeError("open() argument 'encoding' must be str or None, not %s" % type(encoding).__name__)
    if errors is not None and not isinstance(errors, str):
        raise TypeError("open() argument 'errors' must be str or None, not %s" % type(errors).__name__)
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        raise ValueError("invalid mode: '%s'" % mode)
    creating = "x" in modes
    reading = "r" in modes
    writing = "w" in modes
    appending = "a" in modes
    updating = "+" in modes
    text = "t" in modes
    binary = "b" in modes
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    if creating + reading + writing + appending > 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if not (creating or reading or writing or appending):
        raise ValueError("Must have exactly one of create/read/write/append mode and at most one plus")
    if binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if binary and buffering == 1:
        import warnings
        warnings.warn("line buffering (buffering=1) isn't supported in binary "
                      "mode, the default buffer size will be used",
                      RuntimeWarning, 2)
    raw = FileIO(file,
                 (creating and "x" or "") + (reading and "r" or "") +
                 (writing and "w" or "") + (appending and "a" or "") +
                 (updating and "+" or ""),
                 closefd, opener=opener)
    result = raw
    try:
        line_buffering = False
        if buffering == 1 or buffering < 0 and raw.isatty():
            buffering = -1
            line_buffering = True
        if buffering < 0:
            buffering = raw._blksize if raw._blksize > 1 else DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if binary:
                return result
            raise ValueError("can't have unbuffered text I/O")
        if updating:
            buffer = _BufferedRandom(raw, buffering)
        elif creating or writing or appending:
            buffer = _BufferedWriter(raw, buffering)
        else:
            buffer = _BufferedReader(raw, buffering)
        result = buffer
        if binary:
            return result
        encoding = _text_encoding(encoding)
        result = _TextIOWrapper(buffer, encoding, errors, newline, line_buffering)
        result.mode = mode
        return result
    except BaseException:
        result.close()
        raise
