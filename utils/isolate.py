"""Private copies of modules, taken before anything patches them.

The runtime's own I/O and bookkeeping must not go through the boundary the
installer puts on ``os``, ``posix``, ``_thread``, ``time``… (it would be
recorded, or replayed), nor through a program's own patches of them. Each
module of ours therefore takes the functions it needs from a private copy
made when it is imported, before install:

    from retracesoftware.utils.isolate import isolate_module
    _posix = isolate_module(posix)
    ...
    _posix.close(fd)          # the real close, whatever is patched later

(coverage.py's ``coverage/misc.py`` ``isolate_module``.) The copy is made once
per module and shared: the first caller, at our import, fixes it. Only
functions and constants should be used from a copy: a value the module
rebinds later (``sys.stdout``) is the one it had then.
"""
from __future__ import annotations

import types

__all__ = ["isolate_module"]

_ISOLATED: dict = {}   # id(module) -> (module, its copy)


def isolate_module(module: types.ModuleType) -> types.ModuleType:
    """A copy of *module* (its attributes as they are now; ``os.path`` copied
    the same way), the same copy on every call."""
    entry = _ISOLATED.get(id(module))
    if entry is not None and entry[0] is module:
        return entry[1]
    copy = types.ModuleType(module.__name__, module.__doc__)
    _ISOLATED[id(module)] = (module, copy)
    for name, value in list(vars(module).items()):
        if name == "path" and isinstance(value, types.ModuleType):
            value = isolate_module(value)
        setattr(copy, name, value)
    return copy

