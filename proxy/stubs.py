"""Stand-ins for external objects.

* `StubFactory.create(cls)`: on replay, an instance of a patched type that the
  recording says was created by external code (``NEW``) is made without running
  any constructor: ``cls.__new__(cls)`` (for builtin types this allocates an
  empty object, e.g. a socket with fd -1, and opens nothing), or
  ``object.__new__(cls)`` when ``cls.__new__`` insists on arguments. The stub's
  patched methods replay; anything else on it sees an empty object.
* `ExternalObject`: a value a patched call returned that the tape cannot
  carry and whose type is not patched. Record and replay both hand the program
  an `ExternalObject` bound by identity; attribute reads (``__getattr__``) and
  calls (``__call__``) on it are boundary calls, so ``obj.method(x)`` records a
  getattr (whose result, a bound method, is itself an `ExternalObject`) and a
  call. Operators, iteration, ``with`` and ``isinstance`` against the original
  type are not forwarded: patch the type instead when a program needs them.
"""
from __future__ import annotations


class StubFactory:
    """Makes replay-side instances of patched types without constructors."""

    def create(self, cls):
        try:
            return cls.__new__(cls)
        except TypeError:
            return object.__new__(cls)


class ExternalObject:
    """Base of each System's proxy type for untransportable results."""

    __slots__ = ("_retrace_target", "_retrace_typename", "__weakref__")

    def __repr__(self):
        # Deterministic and never a boundary call.
        return f"<external {object.__getattribute__(self, '_retrace_typename')} object>"


def external_getattr(proxy, name):
    """Record-side target of ``ExternalObject.__getattr__``."""
    return getattr(object.__getattribute__(proxy, "_retrace_target"), name)


def external_call(proxy, /, *args, **kwargs):
    """Record-side target of ``ExternalObject.__call__``."""
    return object.__getattribute__(proxy, "_retrace_target")(*args, **kwargs)
