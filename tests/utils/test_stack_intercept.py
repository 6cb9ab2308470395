import sys

import pytest

from retracesoftware.utils import MISSING, InterceptDict


def outer(u, skip=0):
    return inner(u, skip)


def inner(u, skip):
    return u.capture_stack(skip)


def test_capture_stack_matches_frames(u):
    stack = outer(u)
    names = [f for _, _, f in stack]
    assert names[-2:] == ["outer", "inner"]
    assert stack[-1][0] == __file__
    assert stack[-1][1] == inner.__code__.co_firstlineno + 1
    assert len(stack) == len(outer(u, skip=1)) + 1
    with pytest.raises(ValueError):
        u.capture_stack(-1)


def test_backends_agree():
    from .conftest import load_backend

    py, cpp = load_backend("python"), load_backend("cpp")
    assert py.capture_stack() == cpp.capture_stack()


def test_stack_delta(u):
    d = u.StackDelta()

    def a():
        return d.capture()

    def b():
        return d.capture()

    common1, new1 = a()
    assert common1 == 0 and new1[-1][2] == "a"
    common2, new2 = b()
    # the test's own frame moved to another line: it and b() are new
    assert common2 == len(new1) - 2 and [f for _, _, f in new2] == ["test_stack_delta", "b"]
    d.reset()
    assert d.capture()[0] == 0


def test_stack_refcounts(u):
    before = sys.getrefcount(__file__)
    for _ in range(20):
        outer(u)
    assert sys.getrefcount(__file__) == before


def test_intercept_dict_reads_and_writes():
    reads, writes = [], []

    def on_read(k, v):
        reads.append((k, v))
        return "X" if k == "fake" else v

    d = InterceptDict({"a": 1}, on_read=on_read, on_write=lambda k, v: writes.append((k, v)))
    assert d["a"] == 1 and d.get("b", 9) == 9 and "fake" in d and d["fake"] == "X"
    assert reads[:2] == [("a", 1), ("b", MISSING)]
    with pytest.raises(KeyError):
        d["nope"]
    d["c"] = 3
    del d["c"]
    assert d.pop("a") == 1
    assert writes == [("c", 3), ("c", MISSING), ("a", MISSING)]
    assert isinstance(d, dict) and dict(d) == {}
