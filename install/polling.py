"""``select.poll`` rebuilt on one recorded primitive per wait.

A ``select.poll`` object has no constructor a replay could call (the type
cannot be instantiated from Python, so no stub can stand for it), and it holds
no kernel state: poll(2) is handed the whole descriptor set on every call.
So under retrace ``select.poll()`` returns a `PollObject` that keeps the
registrations in program memory (register/modify/unregister are plain Python,
same in record and replay) and makes each ``poll(timeout)`` one boundary call,
``select.poll.poll(registrations, timeout)``, whose result (the ready list)
is what the program learns from the outside world.
"""
from __future__ import annotations

import errno
import os
import select as _select
from retracesoftware.utils.isolate import isolate_module

# Private copies taken at import, before any patch (utils/isolate.py).
_real_select = isolate_module(_select)
_real_os = isolate_module(os)
_DEFAULT_MASK = _select.POLLIN | _select.POLLPRI | _select.POLLOUT


def poll_once(registrations, timeout):
    """The recorded primitive: poll *registrations* ((fd, mask), …) once."""
    p = _real_select.poll()
    for fd, mask in registrations:
        p.register(fd, mask)
    return p.poll(timeout)


def _fileno(fd):
    # PyObject_AsFileDescriptor: an int, or an object with fileno().
    if isinstance(fd, int):
        value = int(fd)
    else:
        meth = getattr(fd, "fileno", None)
        if meth is None:
            raise TypeError("argument must be an int, or have a fileno() method.")
        value = meth()
        if not isinstance(value, int):
            raise TypeError("fileno() returned a non-integer")
    if value < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({value})")
    return value


def _mask(eventmask):
    if not isinstance(eventmask, int):
        raise TypeError(f"'{type(eventmask).__name__}' object cannot be interpreted as an integer")
    if not 0 <= eventmask <= 0xFFFF:
        raise OverflowError("Python int too large for C unsigned short")
    return int(eventmask)


class PollObject:
    """What ``select.poll()`` returns under retrace (same methods)."""

    __slots__ = ("_fds", "_poll_once", "_polling")

    def __init__(self, recorded_poll):
        self._fds = {}
        self._poll_once = recorded_poll
        self._polling = False

    def register(self, fd, eventmask=_DEFAULT_MASK):
        self._fds[_fileno(fd)] = _mask(eventmask)

    def modify(self, fd, eventmask):
        fd = _fileno(fd)
        mask = _mask(eventmask)
        if fd not in self._fds:
            raise FileNotFoundError(errno.ENOENT, _real_os.strerror(errno.ENOENT))
        self._fds[fd] = mask

    def unregister(self, fd):
        fd = _fileno(fd)
        if fd not in self._fds:
            raise KeyError(fd)
        del self._fds[fd]

    def poll(self, timeout=None):
        if timeout is not None and not isinstance(timeout, (int, float)):
            raise TypeError(f"Timeout must be an integer or None, got {type(timeout).__name__}")
        if self._polling:
            raise RuntimeError("concurrent poll() invocation")
        self._polling = True
        try:
            return self._poll_once(tuple(self._fds.items()), timeout)
        finally:
            self._polling = False

    def __repr__(self):
        return f"<select.poll object at {id(self):#x}>"


PollObject.__module__ = "select"
PollObject.__qualname__ = PollObject.__name__ = "poll"


class _PollFactory:
    """``select.poll`` under retrace. A callable object, not a function: like
    the builtin it replaces it does not bind as a method when a class body
    copies it (``selectors.PollSelector._selector_cls = select.poll``)."""

    __slots__ = ("_recorded",)
    __name__ = __qualname__ = "poll"
    __module__ = "select"
    __doc__ = _real_select.poll.__doc__

    def __init__(self, recorded):
        self._recorded = recorded

    def __call__(self):
        return PollObject(self._recorded)

    def __repr__(self):
        return "<built-in function poll>"


def make_poll(system, name):
    """``select.poll`` for *system*: each wait is the boundary call *name*.poll."""
    return _PollFactory(system.patch_function(poll_once, f"{name}.poll"))
