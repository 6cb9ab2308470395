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

import sys as _sys
import weakref as _weakref

from retracesoftware.utils import INTERNAL

SYNC_CALL = "multiprocessing.shared_memory.sync"


class SharedRegions:
    """Memory ``multiprocessing`` shares with other processes: its heap's
    arenas (``Value``, ``Array``, ``RawValue``, ``RawArray``) and
    ``shared_memory.SharedMemory`` blocks, in the order this process mapped
    them (the same on replay).

    Another process's writes become the program's data when this process
    synchronises with it: a ``Process.join()``/``is_alive()``, a
    ``multiprocessing`` lock or semaphore acquire (``Lock``, ``RLock``,
    ``Condition``, ``Event``, ``Barrier``, a shared value's lock), a
    ``Connection``/``Queue``/``Pool`` receive. After each of those (while
    any region exists) one recorded call, ``multiprocessing.shared_memory.sync``,
    returns the byte ranges of every region that changed since the last
    one; the replay writes them into its own copies of the regions, so any
    read after it — ``shm.buf``, a ``RawArray`` item, ``bytes()``, a numpy
    view — sees the recorded bytes. Cost: a comparison of every region's
    bytes with its last snapshot per synchronisation (O(total size)), in
    processes that mapped such memory only. A read that no synchronisation
    orders after the other process's write (polling a flag in a loop)
    is a data race: not covered (docs/FIDELITY.md)."""

    def __init__(self, system):
        self.system = system
        self.gate = system.gate
        self.replaying = system.mode == "replay"
        self.maps: list = []            # weakref to the map, or None once gone
        self.snapshots: list = []
        self._tape = system.patch_function(self._changes, SYNC_CALL)

    def add(self, mapped):
        try:
            ref = _weakref.ref(mapped)
        except TypeError:
            ref = lambda mapped=mapped: mapped
        self.maps.append(ref)
        self.snapshots.append(self._bytes(mapped))

    @staticmethod
    def _bytes(mapped):
        try:
            return bytes(mapped)
        except (ValueError, OSError):      # closed
            return None

    def _changes(self):
        """Record: (index, offset, bytes) of every changed range."""
        changes = []
        for i, ref in enumerate(self.maps):
            mapped = ref() if ref is not None else None
            now = self._bytes(mapped) if mapped is not None else None
            if now is None:
                self.maps[i] = None
                continue
            before = self.snapshots[i]
            if now == before:
                continue
            self.snapshots[i] = now
            if before is None or len(before) != len(now):
                changes.append((i, 0, now))
                continue
            start, end = _first_difference(before, now), len(now) - _first_difference(before[::-1], now[::-1])
            changes.append((i, start, now[start:end]))
        return changes

    def sync(self):
        if not self.maps or self.gate.phase != INTERNAL:
            return
        changes = self._tape()
        if not self.replaying:
            return
        for change in changes if isinstance(changes, list) else ():
            try:
                i, offset, data = change
                ref = self.maps[i]
                mapped = ref() if ref is not None else None
                if mapped is not None:
                    mapped[offset:offset + len(data)] = data
            except (TypeError, ValueError, IndexError):
                raise self.system._diverge(
                    getattr(self.system.reader, "events", 0), "shared memory contents this replay can hold",
                    f"a change {type(change).__name__} that does not fit the memory mapped here") from None

    def after(self, fn):
        """*fn* followed by a sync (also when it raised)."""
        sync = self.sync

        def synced(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            finally:
                sync()
        synced.__name__ = getattr(fn, "__name__", "synced")
        synced.__qualname__ = getattr(fn, "__qualname__", synced.__name__)
        synced.__wrapped__ = fn
        return synced


def _first_difference(a: bytes, b: bytes) -> int:
    """Index of the first differing byte (memcmp by halves)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi) // 2
        if a[lo:mid + 1] == b[lo:mid + 1]:
            lo = mid + 1
        else:
            hi = mid
    return lo


def install(system, installer) -> None:
    regions = SharedRegions(system)
    installer.when_imported("mmap", lambda module: _patch(system, installer, module, regions))
    installer.when_imported("multiprocessing.sharedctypes",
                            lambda module: _patch_shared_values(system, installer, module))
    _hook_synchronisation(installer, regions)


def _hook_synchronisation(installer, regions) -> None:
    """Where another process's writes become visible: see SharedRegions."""
    def wrap(owner, names):
        for name in names:
            real = owner.__dict__.get(name)
            if callable(real):
                installer._set(owner, name, regions.after(real))

    installer.when_imported("multiprocessing.process",
                            lambda m: wrap(m.BaseProcess, ("join", "is_alive")))
    installer.when_imported("multiprocessing.connection", lambda m: wrap(
        m._ConnectionBase, ("recv_bytes", "recv_bytes_into", "recv", "poll")))

    def synchronize(m):
        wrap(m.SemLock, ("__enter__",))
        make = m.SemLock.__dict__.get("_make_methods")
        if make is None:
            return

        def _make_methods(self):
            make(self)
            self.acquire = regions.after(self.acquire)
        installer._set(m.SemLock, "_make_methods", _make_methods)
    installer.when_imported("multiprocessing.synchronize", synchronize)


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
            installer._set(cls, attr, property(tape, prop.fset, prop.fdel, prop.__doc__))
    cls = module.__dict__.get("SynchronizedArray")
    for method in ("__getitem__", "__getslice__"):
        real = cls.__dict__.get(method) if cls is not None else None
        if real is None:
            continue
        tape = system.patch_function(_named(lambda obj, *args, _real=real: _real(obj, *args), method),
                                     f"{prefix}SynchronizedArray.{method}")

        def call(obj, *args, _tape=tape):
            return _tape(obj, *args)
        installer._set(cls, method, _named(call, method))


def _named(fn, name):
    fn.__name__ = fn.__qualname__ = name
    return fn


def _patch(system, installer, module, regions=None) -> None:
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
            else:
                mapped = real.__new__(cls, fileno, length, *args, **kwargs)
                contents_of(mapped)
            if regions is not None and _sys._getframe(1).f_globals.get("__name__", "").startswith("multiprocessing"):
                regions.add(mapped)     # shared with other processes
            return mapped

    mmap.__module__ = real.__module__
    mmap.__qualname__ = mmap.__name__ = real.__name__
    installer._set(module, "mmap", mmap)
