"""``mmap.mmap`` of a file under retrace.

A file's mapped bytes are data from outside the program, read by memory
access, not by calls: nothing of them would be on the tape, and on replay
the descriptor number is a recorded one (no such file is open), so the
real ``mmap(fd, ...)`` fails with EBADF (or maps whatever else has that
number). When program code maps a file (``fileno != -1``):

* record: the real map is made, then its contents at that moment are one
  boundary call's result (``mmap.contents``, bytes);
* replay: an anonymous map of that size holds the recorded contents.

Anonymous maps (``fileno == -1``) are made as usual in both modes. Not
covered: later changes to the file made by other processes (shared memory
between processes: ``multiprocessing`` shared values written by children
are not seen by the replayed parent); ``size()`` of a replayed map is the
mapped length; a read-only map is writable on replay.
"""
from __future__ import annotations

from retracesoftware.utils import INTERNAL


def install(system, installer) -> None:
    installer.when_imported("mmap", lambda module: _patch(system, installer, module))


def _patch(system, installer, module) -> None:
    real = module.__dict__.get("mmap")
    if not isinstance(real, type):
        return
    gate = system.gate
    replaying = system.mode == "replay"

    def contents_of(mapped):
        holder = [mapped]
        # No arguments on the tape: the map is not data (its fingerprint
        # would differ on replay, where it is another object).
        return system.patch_function(lambda: bytes(holder[0]) if holder[0] is not None else b"",
                                     "mmap.contents")()

    class mmap(real):
        __doc__ = real.__doc__

        def __new__(cls, fileno, length, *args, **kwargs):
            if gate.phase != INTERNAL or fileno == -1:
                return real.__new__(cls, fileno, length, *args, **kwargs)
            if replaying:
                data = contents_of(None)
                mapped = real.__new__(cls, -1, max(len(data), 1))
                if data:
                    mapped[:len(data)] = data
                return mapped
            mapped = real.__new__(cls, fileno, length, *args, **kwargs)
            contents_of(mapped)
            return mapped

    mmap.__module__ = real.__module__
    mmap.__qualname__ = mmap.__name__ = real.__name__
    installer._set(module, "mmap", mmap)
