"""``os.scandir`` rebuilt on one recorded listing per directory.

A real ``ScandirIterator`` yields C ``DirEntry`` objects that cache what the
directory listing said and may stat lazily; neither type can be made without
a real directory. Under retrace, ``scandir`` reads the whole listing in one
boundary call (names plus the type bits the listing gave), and hands out
``DirEntry`` objects that answer from it, calling the (recorded) ``os.stat``
/ ``os.lstat`` only where the real ones would. ``os.walk``, ``glob`` and
``shutil`` all go through here.
"""
from __future__ import annotations

import os

from retracesoftware.install.isolation import posix_view as _os   # program patches of os unseen
from retracesoftware.install.substitutes import poses_as
import stat as _stat

_real_scandir = os.scandir
_real_DirEntry = os.DirEntry
_fspath = os.fspath


def listing(path):
    """The recorded primitive: [(name, is_dir, is_file, is_symlink, inode), ...]."""
    with _real_scandir(path) as it:
        return [(e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False),
                 e.is_symlink(), e.inode()) for e in it]


class DirEntry:
    """What ``os.scandir`` yields (same methods and attributes as ``os.DirEntry``)."""

    __class__ = poses_as(_real_DirEntry)   # isinstance(entry, os.DirEntry)

    __slots__ = ("name", "path", "_is_dir", "_is_file", "_is_symlink", "_inode", "_stat",
                 "_lstat", "_dir_fd")

    def __init__(self, name, path, is_dir, is_file, is_symlink, inode, dir_fd=None):
        self.name = name
        self.path = path
        self._is_dir = is_dir
        self._is_file = is_file
        self._is_symlink = is_symlink
        self._inode = inode
        self._stat = None
        self._lstat = None
        self._dir_fd = dir_fd

    def inode(self):
        return self._inode

    def is_symlink(self):
        return self._is_symlink

    def stat(self, *, follow_symlinks=True):
        if follow_symlinks and self._is_symlink:
            if self._stat is None:
                self._stat = _os.stat(self.path) if self._dir_fd is None else \
                    _os.stat(self.name, dir_fd=self._dir_fd)
            return self._stat
        if self._lstat is None:
            self._lstat = _os.lstat(self.path) if self._dir_fd is None else \
                _os.stat(self.name, dir_fd=self._dir_fd, follow_symlinks=False)
        return self._lstat

    def _test(self, mode_test, listed, follow_symlinks):
        if follow_symlinks and self._is_symlink:
            try:
                return mode_test(self.stat().st_mode)
            except FileNotFoundError:
                return False
        return listed

    def is_dir(self, *, follow_symlinks=True):
        return self._test(_stat.S_ISDIR, self._is_dir, follow_symlinks)

    def is_file(self, *, follow_symlinks=True):
        return self._test(_stat.S_ISREG, self._is_file, follow_symlinks)

    def is_junction(self):  # PYVERSIONS: 3.12+
        return False

    def __fspath__(self):
        return self.path

    def __repr__(self):
        return f"<DirEntry {self.name!r}>"

    __class_getitem__ = classmethod(lambda cls, item: cls)


class ScandirIterator:
    """Iterator and context manager over a recorded listing."""

    def __init__(self, entries):
        self._entries = iter(entries)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._entries)

    def close(self):
        self._entries = iter(())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def make_scandir(list_directory):
    """``os.scandir`` built on ``list_directory`` (the boundary-wrapped `listing`)."""

    def scandir(path="."):
        if isinstance(path, int):
            rows = list_directory(path)
            return ScandirIterator([DirEntry(n, n, d, f, s, i, dir_fd=path) for n, d, f, s, i in rows])
        path = _fspath(path)
        rows = list_directory(path)
        if isinstance(path, bytes):
            sep = os.sep.encode()
            prefix = path if path.endswith(sep) or not path else path + sep
            if path == b".":
                prefix = b"./"
        else:
            prefix = path if path.endswith(os.sep) or not path else path + os.sep
        return ScandirIterator([DirEntry(n, prefix + n, d, f, s, i) for n, d, f, s, i in rows])

    scandir.__name__ = "scandir"
    scandir.__qualname__ = "scandir"
    scandir.__module__ = "posix"
    return scandir
