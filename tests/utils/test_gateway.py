import sys
import time

import pytest


def make_record(u, g, log, target=None, after=True, error=True, before=True):
    def _before(*a, **kw):
        log.append(("before", g.phase, a, kw))

    def _target(*a, **kw):
        log.append(("target", g.phase, a, kw))
        return ("r", a, kw)

    def _after(r):
        log.append(("after", g.phase, r))
        return ("after", r)

    def _error(exc):
        log.append(("error", g.phase, type(exc).__name__))

    return u.RecordGateway(
        g,
        target or _target,
        _before if before else None,
        _after if after else None,
        _error if error else None,
    )


def test_record_internal_sequence(u):
    g = u.Gate()
    log = []
    gw = make_record(u, g, log)
    g.phase = u.INTERNAL
    res = gw(1, 2, k=3)
    assert res == ("after", ("r", (1, 2), {"k": 3}))
    assert log == [
        ("before", u.INTERNAL, (1, 2), {"k": 3}),
        ("target", u.EXTERNAL, (1, 2), {"k": 3}),
        ("after", u.INTERNAL, ("r", (1, 2), {"k": 3})),
    ]
    assert g.phase == u.INTERNAL


@pytest.mark.parametrize("phase", [0, 2])
def test_record_not_internal_goes_straight_through(u, phase):
    g = u.Gate()
    log = []
    gw = make_record(u, g, log)
    g.phase = phase
    assert gw(5) == ("r", (5,), {})
    assert log == [("target", phase, (5,), {})]
    assert g.phase == phase


def test_record_optional_callbacks(u):
    g = u.Gate()
    log = []
    gw = make_record(u, g, log, before=False, after=False, error=False)
    g.phase = u.INTERNAL
    assert gw(1) == ("r", (1,), {})
    assert log == [("target", u.EXTERNAL, (1,), {})]


def test_record_exception_restores_phase_and_calls_error(u):
    g = u.Gate()
    log = []

    def target(x):
        log.append(("target", g.phase))
        raise ZeroDivisionError(x)

    gw = make_record(u, g, log, target=target)
    g.phase = u.INTERNAL
    with pytest.raises(ZeroDivisionError) as info:
        gw(7)
    assert info.value.args == (7,)
    assert log == [
        ("before", u.INTERNAL, (7,), {}),
        ("target", u.EXTERNAL),
        ("error", u.INTERNAL, "ZeroDivisionError"),
    ]
    assert g.phase == u.INTERNAL


def test_record_error_callback_raising_replaces_exception(u):
    g = u.Gate()

    def target():
        raise KeyError("orig")

    def error(exc):
        raise RuntimeError("from error")

    gw = u.RecordGateway(g, target, None, None, error)
    g.phase = u.INTERNAL
    with pytest.raises(RuntimeError) as info:
        gw()
    assert isinstance(info.value.__context__, KeyError)
    assert g.phase == u.INTERNAL


def test_record_before_raising_skips_target(u):
    g = u.Gate()
    called = []

    def before(*a):
        raise ValueError("no")

    gw = u.RecordGateway(g, lambda: called.append(1), before, None, None)
    g.phase = u.INTERNAL
    with pytest.raises(ValueError):
        gw()
    assert called == []
    assert g.phase == u.INTERNAL


def test_replay_gateway(u):
    g = u.Gate()
    gw = u.ReplayGateway(g, lambda *a, **k: ("target", a, k), lambda *a, **k: ("replay", g.phase, a, k))
    assert gw(1, x=2) == ("target", (1,), {"x": 2})
    g.phase = u.INTERNAL
    assert gw(1, x=2) == ("replay", u.INTERNAL, (1,), {"x": 2})
    g.phase = u.EXTERNAL
    assert gw() == ("target", (), {})


def test_constructor_validation(u):
    g = u.Gate()
    with pytest.raises(TypeError):
        u.RecordGateway(object(), time.time, None, None, None)
    with pytest.raises(TypeError):
        u.RecordGateway(g, 42, None, None, None)
    with pytest.raises(TypeError):
        u.RecordGateway(g, time.time, 1, None, None)
    with pytest.raises(TypeError):
        u.ReplayGateway(g, time.time, None)


@pytest.mark.parametrize("kind", ["record", "replay"])
def test_gateway_binds_like_a_function(u, kind):
    g = u.Gate()

    def target(self, x):
        return ("target", self, x, g.phase)

    def replay(self, x):
        return ("replay", self, x)

    if kind == "record":
        gw = u.RecordGateway(g, target, None, None, None)
    else:
        gw = u.ReplayGateway(g, target, replay)

    class C:
        m = gw

    class D(C):
        pass

    assert C.m is gw
    c, d = C(), D()
    g.phase = u.INTERNAL
    r1, r2 = c.m(1), d.m(2)
    if kind == "record":
        assert r1 == ("target", c, 1, u.EXTERNAL)
        assert r2 == ("target", d, 2, u.EXTERNAL)
    else:
        assert r1 == ("replay", c, 1)
        assert r2 == ("replay", d, 2)
    bound = c.m
    assert bound.__self__ is c and bound.__func__ is gw
    assert gw.__wrapped__ is target and gw.__name__ == "target"


def test_gateway_refcounts(u):
    g = u.Gate()
    arg, kwval = object(), object()
    res = object()
    tgt = lambda *a, **k: res  # noqa: E731
    gw = u.RecordGateway(g, tgt, lambda *a, **k: None, lambda r: r, lambda e: None)
    rp = u.ReplayGateway(g, tgt, lambda *a, **k: res)
    g.phase = u.INTERNAL
    counts = lambda: (sys.getrefcount(arg), sys.getrefcount(kwval), sys.getrefcount(res), sys.getrefcount(gw))  # noqa: E731
    before = counts()
    for _ in range(200):
        assert gw(arg, k=kwval) is res
        assert rp(arg, k=kwval) is res
    g.phase = u.DISABLED
    for _ in range(200):
        assert gw(arg, k=kwval) is res
    assert counts() == before

    def bad(*a, **k):
        raise ValueError("x")

    gw2 = u.RecordGateway(g, bad, None, None, lambda e: None)
    g.phase = u.INTERNAL
    before = counts()
    for _ in range(200):
        with pytest.raises(ValueError):
            gw2(arg, k=kwval)
    assert counts() == before


def test_gateway_bound_method_refcounts(u):
    g = u.Gate()
    gw = u.RecordGateway(g, lambda self, x: x, None, None, None)

    class C:
        m = gw

    c, arg = C(), object()
    g.phase = u.INTERNAL
    before = (sys.getrefcount(c), sys.getrefcount(arg), sys.getrefcount(gw))
    for _ in range(200):
        assert c.m(arg) is arg
    assert (sys.getrefcount(c), sys.getrefcount(arg), sys.getrefcount(gw)) == before


def test_record_around_time_time(u):
    g = u.Gate()
    gw = u.RecordGateway(g, time.time, None, None, None)
    g.phase = u.INTERNAL
    a = time.time()
    b = gw()
    assert isinstance(b, float) and b >= a
