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
covered: later changes to the file made by other processes, read through
the map itself (``shared_memory.SharedMemory.buf``, a raw ``mmap``);
``size()`` of a replayed map is the mapped length; a read-only map is
writable on replay.

``multiprocessing`` shared values (``Value``, ``Array``, their ``value``,
``raw``, items and slices) are read under their lock, through the
``Synchronized*`` wrappers: those reads are boundary calls
(``multiprocessing.sharedctypes.Synchronized.value`` …), so what children
wrote reads as recorded in the replayed parent. (``RawValue``/``RawArray``
and ``get_obj()`` are plain memory: not covered.)
"""
from __future__ import annotations

from retracesoftware.utils import INTERNAL


def install(system, installer) -> None:
    installer.when_imported("mmap", lambda module: _patch(system, installer, module))
    installer.when_imported("multiprocessing.sharedctypes",
                            lambda module: _patch_shared_values(system, installer, module))


def _patch_shared_values(system, installer, module) -> None:
    """Reads of shared values through their synchronized wrappers are
    recorded (see the module docstring)."""
    prefix = "multiprocessing.sharedctypes."
    for cls_name, attrs in (("Synchronized", ("value",)), ("SynchronizedString", ("value", "raw"))):
        cls = module.__dict__.get(cls_name)
        for attr in attrs:
            prop = cls.__dict__.get(attr) if cls is not None else None
            if not isinstance(prop, property) or prop.fget is None:
                continue
            read = _named(lambda obj, _get=prop.fget: _get(obj), attr)
            tape = system.patch_function(read, f"{prefix}{cls_name}.{attr}")
            installer.patch(cls, attr, property(tape, prop.fset, prop.fdel, prop.__doc__))
    cls = module.__dict__.get("SynchronizedArray")
    for method in ("__getitem__", "__getslice__"):
        real = cls.__dict__.get(method) if cls is not None else None
        if real is None:
            continue
        tape = system.patch_function(_named(lambda obj, *args, _real=real: _real(obj, *args), method),
                                     f"{prefix}SynchronizedArray.{method}")

        def call(obj, *args, _tape=tape):
            return _tape(obj, *args)
        installer.patch(cls, method, _named(call, method))


def _named(fn, name):
    fn.__name__ = fn.__qualname__ = name
    return fn


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
    installer.patch(module, "mmap", mmap)
