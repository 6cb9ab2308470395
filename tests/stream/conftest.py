"""Fixtures for the stream tests: every test that takes `impl` runs on both
backends (the `backend` fixture and retrace_testing.load_backend: one skip
rule for every layer, see tests/README.md)."""
import pytest

from retrace_testing import load_backend


@pytest.fixture
def impl(backend):
    return load_backend("stream", backend)


@pytest.fixture
def both():
    return load_backend("stream", "python"), load_backend("stream", "cpp")


# ---- the shared value table (msgspec habit) ----
import collections
import datetime
import decimal
import enum
import os
import time

INT_BOUNDARIES = []
for b in [0, 1, 31, 32, 127, 128, 255, 256, 32767, 32768, 65535, 65536,
          2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
          2**64 + 1, 2**100, 2**1000]:
    INT_BOUNDARIES += [b, -b]
INT_BOUNDARIES += [-32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1,
                   -2**63, -2**63 - 1, -2**71, -2**71 - 1]

STR_LENGTHS = [0, 1, 3, 4, 31, 32, 64, 65, 255, 256, 65535, 65536]


class Color(enum.Enum):
    RED = 1
    BLUE = "b"


Point = collections.namedtuple("Point", "x y")


def value_table():
    vals = [None, True, False, 0.0, -0.0, 1.5, float("inf"), 1e308, -2.5e-308]
    vals += INT_BOUNDARIES
    for n in STR_LENGTHS:
        vals.append("x" * n)
        vals.append(b"y" * n)
    vals += ["héllo wörld ☃", "\udcff lone surrogate", "repeat me", "repeat me", "repeat me"]
    for n in [0, 1, 15, 16, 65535, 65536]:
        vals.append(list(range(n)) if n < 100 else [0] * n)
    vals += [{}, {i: i for i in range(15)}, {i: i for i in range(16)}, {str(i): i for i in range(70000)}]
    vals += [(), (1,), (1, (2, (3, ()))), [1, [2, [3, {"k": (4, 5)}]]], {(1, 2): frozenset({1}), "s": {3, 4}},
             set(), frozenset()]
    vals += [ValueError("bad", 1), KeyError("k"), FileNotFoundError(2, "No such file", "/nope"),
             PermissionError(13, "denied", "/a", None, "/b"), StopIteration(5), SystemExit(3)]
    vals += [os.stat("/"), time.gmtime(0), time.localtime(86400 * 365)]
    vals += [datetime.datetime(2024, 2, 29, 12, 30, 45, 123456),
             datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
             datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=-5), "EST")),
             datetime.date(1999, 12, 31), datetime.time(23, 59, 1, 5), datetime.timedelta(days=-1, seconds=5)]
    vals += [decimal.Decimal("3.14159"), 3 + 4j, bytearray(b"abc"), Color.RED, Color.BLUE, Point(1, "two")]
    return vals


def same(a, b):
    """Deep equality that also checks types (1 vs 1.0 vs True) and exceptions."""
    if type(a) is not type(b):
        return False
    if isinstance(a, BaseException):
        return a.args == b.args and all(getattr(a, n, None) == getattr(b, n, None)
                                        for n in ("errno", "strerror", "filename", "filename2"))
    if isinstance(a, float) and a != a:
        return b != b
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if hasattr(type(a), "n_sequence_fields"):
        return a == b and a.__reduce__() == b.__reduce__()
    return a == b


@pytest.fixture
def values():
    return value_table()


@pytest.fixture
def deep_equal():
    return same

