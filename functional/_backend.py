"""Backend choice shared by every native layer (functional, utils, stream).

One rule, in one place (coverage.py's ``core.py`` habit):

* ``RETRACE_BACKEND=cpp``    -> the C++ extension, or a hard ``ImportError``
  naming what failed to import.
* ``RETRACE_BACKEND=python`` -> the pure-Python fallback, silently.
* unset                     -> C++ if it imports, else the fallback with one
  ``RuntimeWarning`` per layer carrying a stable slug (``no-cpp-<layer>``).

The chosen module and the reason are returned so each layer can expose
``BACKEND`` ("cpp" or "python") and ``BACKEND_REASON``.
"""
from __future__ import annotations

import importlib
import os
import warnings

_VALID = ("cpp", "python")


class BackendWarning(RuntimeWarning):
    """Warned once per layer when the C++ backend is missing and not forced."""


def requested() -> str | None:
    value = os.environ.get("RETRACE_BACKEND", "").strip().lower()
    if not value:
        return None
    if value not in _VALID:
        raise ImportError(
            f"RETRACE_BACKEND={value!r} is not a backend; use 'cpp' or 'python'"
        )
    return value


def choose(layer: str, cpp_module: str, python_module: str):
    """Import and return ``(module, backend_name, reason)`` for *layer*."""
    forced = requested()
    if forced == "python":
        return importlib.import_module(python_module), "python", "forced by RETRACE_BACKEND=python"
    try:
        module = importlib.import_module(cpp_module)
    except ImportError as exc:
        if forced == "cpp":
            raise ImportError(
                f"retracesoftware.{layer}: RETRACE_BACKEND=cpp but the C++ extension "
                f"{cpp_module} failed to import: {exc}"
            ) from exc
        warnings.warn(
            f"[no-cpp-{layer}] retracesoftware.{layer}: C++ extension unavailable "
            f"({exc}); using the pure-Python fallback",
            BackendWarning,
            stacklevel=3,
        )
        return importlib.import_module(python_module), "python", f"fallback: {exc}"
    return module, "cpp", "forced by RETRACE_BACKEND=cpp" if forced else "default"


class Capabilities:
    """What a layer's chosen backend can do (coverage.py's ``Core`` record):
    code asks ``layer.CAPABILITIES.has("feature")`` instead of testing
    ``BACKEND == "cpp"``. Each layer's ``__init__`` lists the features only
    its C++ backend has; ``describe()`` is the line ``--verbose`` prints.

    A frozen record written out (not a dataclass: every layer imports this
    module, and dataclasses pulls inspect, ast and dis into every start)."""

    __slots__ = ("layer", "backend", "reason", "features")

    def __init__(self, layer: str, backend: str, reason: str, features: frozenset):
        for name, value in zip(self.__slots__, (layer, backend, reason, features)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field {name!r}")

    def _fields(self):
        return (self.layer, self.backend, self.reason, self.features)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return (f"Capabilities(layer={self.layer!r}, backend={self.backend!r}, "
                f"reason={self.reason!r}, features={self.features!r})")

    def has(self, feature: str) -> bool:
        return feature in self.features

    def describe(self) -> str:
        extra = f", {', '.join(sorted(self.features))}" if self.features else ""
        return f"{self.layer}={self.backend} ({self.reason}{extra})"


def capabilities(layer: str, backend: str, reason: str, cpp_only=()) -> Capabilities:
    """The record for *layer*: the *cpp_only* features are there with the C++ backend."""
    return Capabilities(layer, backend, reason, frozenset(cpp_only) if backend == "cpp" else frozenset())
