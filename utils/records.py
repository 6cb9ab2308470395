"""Frozen records: what ``@dataclass(frozen=True)`` gave the start path's
classes (config.py's, runner.Target), without importing dataclasses, which
pulls inspect, ast, dis and copy into every start (~8 ms of CPU under load,
and ~1 ms per class made).

    @record
    class Point:
        x: int
        y: int = 0
        tags: tuple = field(default_factory=tuple)

Fields are the class's annotations, in order; ``__init__`` takes them by
position or keyword (defaults and ``default_factory`` as dataclasses), and
instances are immutable (`FrozenInstanceError`), compare equal field by field
with the same class, hash by their fields and print as ``Point(x=1, y=0,
tags=())``. `fields` and `replace` work as dataclasses' do on them.
"""
from __future__ import annotations

__all__ = ["FrozenInstanceError", "field", "fields", "record", "replace"]

_MISSING = object()


class FrozenInstanceError(AttributeError):
    """Assigning to or deleting a field of a record."""


class Field:
    __slots__ = ("name", "default", "default_factory")

    def __init__(self, name, default=_MISSING, default_factory=_MISSING):
        self.name = name
        self.default = default
        self.default_factory = default_factory

    def __repr__(self):
        return f"Field(name={self.name!r})"


def field(*, default=_MISSING, default_factory=_MISSING) -> Field:
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(None, default, default_factory)


def record(cls):
    """Make *cls* a frozen record (see the module's doc)."""
    made = []
    seen_default = False
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, Field):
            f = Field(name, value.default, value.default_factory)
            if value.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, value.default)
        else:
            f = Field(name, value)
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {name!r} follows default argument")
        seen_default = seen_default or has_default
        made.append(f)
    all_fields = tuple(made)
    names = tuple(f.name for f in all_fields)
    count = len(all_fields)

    def __init__(self, *args, **kwargs):
        if len(args) > count:
            raise TypeError(f"{cls.__qualname__}.__init__() takes {count + 1} positional arguments "
                            f"but {len(args) + 1} were given")
        setter = object.__setattr__
        for i, f in enumerate(all_fields):
            if i < len(args):
                if f.name in kwargs:
                    raise TypeError(f"{cls.__qualname__}.__init__() got multiple values for argument {f.name!r}")
                value = args[i]
            elif f.name in kwargs:
                value = kwargs.pop(f.name)
            elif f.default is not _MISSING:
                value = f.default
            elif f.default_factory is not _MISSING:
                value = f.default_factory()
            else:
                raise TypeError(f"{cls.__qualname__}.__init__() missing 1 required argument: {f.name!r}")
            setter(self, f.name, value)
        if kwargs:
            raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument "
                            f"{next(iter(kwargs))!r}")

    def _values(self):
        return tuple(getattr(self, n) for n in names)

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return _values(self) == _values(other)
        return NotImplemented

    def __hash__(self):
        return hash(_values(self))

    def __repr__(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{self.__class__.__qualname__}({inner})"

    def __setattr__(self, name, value):
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self, name):
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    for fn in (__init__, __eq__, __hash__, __repr__, __setattr__, __delattr__):
        fn.__qualname__ = f"{cls.__qualname__}.{fn.__name__}"
        setattr(cls, fn.__name__, fn)
    cls.__record_fields__ = all_fields
    cls.__match_args__ = names
    return cls


def fields(obj) -> tuple:
    """The record's (or record class's) fields, in order; each has ``.name``."""
    try:
        return obj.__record_fields__
    except AttributeError:
        raise TypeError("must be called with a record type or instance") from None


def replace(obj, **changes):
    """A copy of the record *obj* with *changes* applied (dataclasses.replace)."""
    for f in fields(obj):
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)
