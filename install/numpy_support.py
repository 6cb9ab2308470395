"""numpy's clock-based values replay (docs/FIDELITY.md).

``numpy.datetime64('now')`` and ``('today')`` read the system clock in C,
past every recorded clock. When numpy is imported under retrace, the
``datetime64`` constructor given ``'now'``/``'today'`` (any case, any unit)
by program code is a boundary call ``numpy.datetime64.now`` whose result is
the value as ``(unit, count, integer)``, rebuilt on replay. Other
constructions are untouched. (numpy's random generators are seeded from
``os.urandom``/``secrets``, which are recorded: they replay as they are.)

Not covered: ``'now'`` inside arrays (``np.array(['now'], dtype='M8[s]')``,
``astype`` of such strings).
"""
from __future__ import annotations

from retracesoftware.utils import INTERNAL

_CLOCK_WORDS = frozenset({"now", "today"})


def install(system, installer) -> None:
    installer.when_imported("numpy", lambda module: _patch(system, installer, module))


def _patch(system, installer, numpy) -> None:
    dt64 = getattr(numpy, "datetime64", None)
    datetime_data = getattr(numpy, "datetime_data", None)
    if not isinstance(dt64, type) or datetime_data is None:
        return
    gate = system.gate
    # The type's own C constructor, called directly (calling the
    # ``__new__`` wrapper once ours is in the type's dict is refused).
    from retracesoftware.utils import NewGateway
    real_new = NewGateway(dt64, gate, None)

    def read_clock(word, *args):
        value = real_new(dt64, word, *args)
        unit, count = datetime_data(value.dtype)
        return (unit, count, int(value.astype("int64")))
    read_clock.__name__ = "now"
    tape = system.patch_function(read_clock, "numpy.datetime64.now")

    def __new__(cls, *args, **kwargs):
        if (gate.phase == INTERNAL and cls is dt64 and args and not kwargs and type(args[0]) is str
                and args[0].strip().lower() in _CLOCK_WORDS):
            unit, count, n = tape(*args)
            return real_new(cls, n, unit if count == 1 else f"{count}{unit}")
        return real_new(cls, *args, **kwargs)
    __new__.__qualname__ = "datetime64.__new__"
    try:
        installer.patch(dt64, "__new__", staticmethod(__new__), is_type=True)
    except TypeError:       # PYVERSIONS: a numpy/CPython that refuses the patch
        pass
