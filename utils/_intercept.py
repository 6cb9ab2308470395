"""InterceptDict: a dict whose key reads and writes go through hooks.

Shared by both backends (pure Python on purpose: it serves things like
``os.environ`` reads, which are not a hot path, and a dict subclass in C++
would gain nothing measurable).
"""
from __future__ import annotations

MISSING = type("MissingType", (), {"__repr__": lambda self: "MISSING", "__slots__": ()})()


class InterceptDict(dict):
    """``InterceptDict(data=(), *, on_read=None, on_write=None)``.

    ``on_read(key, value) -> value``: called by ``d[key]``, ``d.get``,
    ``key in d``, ``d.pop``, ``d.setdefault`` with the stored value or
    ``MISSING``; what it returns is what the caller sees (``MISSING`` means
    "absent").  ``on_write(key, value)``: called before ``d[key] = v``,
    ``update``, ``setdefault`` stores and ``del d[key]``/``pop`` (value
    ``MISSING``).  Iteration, ``len``, ``keys``/``items``/``values`` read the
    stored data directly and call no hook.
    """

    __slots__ = ("on_read", "on_write")
    MISSING = MISSING

    def __init__(self, data=(), /, *, on_read=None, on_write=None, **kwargs):
        super().__init__(data, **kwargs)
        self.on_read = on_read
        self.on_write = on_write

    def _read(self, key):
        value = dict.get(self, key, MISSING)
        hook = self.on_read
        return value if hook is None else hook(key, value)

    def __getitem__(self, key):
        value = self._read(key)
        if value is MISSING:
            raise KeyError(key)
        return value

    def get(self, key, default=None):
        value = self._read(key)
        return default if value is MISSING else value

    def __contains__(self, key):
        return self._read(key) is not MISSING

    def __setitem__(self, key, value):
        if self.on_write is not None:
            self.on_write(key, value)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        if self.on_write is not None:
            self.on_write(key, MISSING)
        dict.__delitem__(self, key)

    def pop(self, key, *default):
        value = self._read(key)
        if value is MISSING:
            if default:
                return default[0]
            raise KeyError(key)
        if self.on_write is not None:
            self.on_write(key, MISSING)
        dict.pop(self, key, None)
        return value

    def setdefault(self, key, default=None):
        value = self._read(key)
        if value is MISSING:
            self[key] = default
            return default
        return value

    def update(self, other=(), /, **kwargs):
        for k, v in dict(other, **kwargs).items():
            self[k] = v

    def __repr__(self):
        return f"InterceptDict({dict.__repr__(self)})"
