"""Our runtime's own work stays invisible to a program's patches of ``os``.

Programs patch ``os`` at Python level: blockbuster wraps ``os.read``,
``os.stat``… to report blocking calls made inside an event loop; test
suites mock ``os.path.exists``. Stdlib Python code we reuse (``_pyio``'s
``FileIO`` under our ``open()``, ``os.path.exists``/``samefile``/
``realpath`` in the subprocess hook) looks ``os`` up in its module globals
at call time, so such a patch would see (and fail) calls the program never
made in a plain run. (coverage.py's ``isolate_module`` does the same for
its tracer.)

* `real_os` — the private copy of ``os`` (``utils.isolate.isolate_module``,
  with an ``os.path`` that uses it) taken at import, before any patch: for
  our control plane (the runtime's own bookkeeping, never recorded).
* `posix_view` — ``os`` as the boundary sees it: every name resolves at
  call time in ``posix`` (where the installer puts its gateways), never in
  the ``os`` module the program may patch. For substitutes that do the
  program's I/O (``open()``): recorded, but not through the program's
  patches.
* `isolated(fn, **names)` — a copy of function *fn* whose globals map
  *names* (default ``os=real_os``) to the given objects.
"""
from __future__ import annotations

import os
import posix
import posixpath
import types

from retracesoftware.utils.isolate import isolate_module

__all__ = ["real_os", "posix_view", "isolated", "isolated_class"]




def _isolated_modules(os_object):
    """``genericpath`` and ``posixpath`` re-made so that every function in
    them (and their calls to each other: ``realpath`` → ``_joinrealpath``)
    sees *os_object* as ``os``; returns the new ``posixpath``."""
    import genericpath
    made = {}
    for module in (genericpath, posixpath):
        namespace = dict(module.__dict__)
        namespace["os"] = os_object
        namespace["genericpath"] = made.get("genericpath", genericpath)
        for key, value in list(namespace.items()):
            if type(value) is types.FunctionType:
                home = made.get(value.__module__)
                if value.__globals__ is module.__dict__:
                    namespace[key] = _clone(value, namespace)
                elif home is not None and key in home.__dict__:
                    namespace[key] = home.__dict__[key]
        made[module.__name__] = _NamespaceModule(module.__name__, namespace)
    return made["posixpath"]


class _NamespaceModule(types.ModuleType):
    """A module object over an existing namespace dict."""

    def __init__(self, name, namespace):
        super().__init__(name)
        self.__dict__.update(namespace)
        self._namespace = namespace

    def __getattr__(self, name):
        try:
            return self._namespace[name]
        except KeyError:
            raise AttributeError(name) from None


def _clone(fn, namespace):
    copy = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    return copy


#: ``os`` and ``os.path`` as they were when the runtime was imported: the
#: shared private copy (utils/isolate.py), whose ``os.path`` functions see it as ``os``.
real_os = isolate_module(os)
real_os.path = _isolated_modules(real_os)


class _PosixView(types.ModuleType):
    """``os`` whose attributes are looked up in ``posix`` at each use."""

    def __getattr__(self, name):
        try:
            return getattr(posix, name)
        except AttributeError:
            return getattr(real_os, name)


posix_view = _PosixView("os")
posix_view.path = _isolated_modules(posix_view)


def isolated(fn, **names):
    """A copy of *fn* (a Python function) whose global *names* are replaced
    (default: ``os`` is `real_os`, ``genericpath``'s too)."""
    if not names:
        names = {"os": real_os}
    namespace = dict(fn.__globals__)
    namespace.update(names)
    return _clone(fn, namespace)


def isolated_class(cls, name=None, **names):
    """A subclass of *cls* whose Python methods defined in *cls* itself are
    `isolated` copies (their globals get *names*)."""
    attrs = {}
    for key, value in vars(cls).items():
        if type(value) is types.FunctionType:
            attrs[key] = isolated(value, **names)
        elif isinstance(value, property):
            attrs[key] = property(*(isolated(f, **names) if type(f) is types.FunctionType else f
                                    for f in (value.fget, value.fset, value.fdel)), value.__doc__)
    return type(name or cls.__name__, (cls,), attrs)
