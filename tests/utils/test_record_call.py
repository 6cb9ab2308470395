"""RecordCallGateway: a recorded call whose CALL is written with its outcome;
flush_pending_calls() writes it earlier when something must come between."""
import sys

import pytest


def make(u, g, log, target, slow=None):
    return u.RecordCallGateway(g, target, lambda *v: log.append(v), "CALL", "mod.fn", "RESULT", "ERROR", slow)


def test_plain_result_is_one_write(u):
    g = u.Gate()
    log = []
    phases = []

    def target(a, b=0):
        phases.append(g.phase)
        return a + b

    gw = make(u, g, log, target)
    g.phase = u.INTERNAL
    assert gw(1, b=2) == 3
    assert log == [("CALL", "mod.fn", u.fingerprint(1, b=2), "RESULT", 3)]
    assert phases == [u.EXTERNAL] and g.phase == u.INTERNAL
    g.phase = u.DISABLED
    assert gw(5) == 5 and len(log) == 1          # not INTERNAL: straight through


def test_no_args_uses_the_constant_fingerprint(u):
    g = u.Gate()
    log = []
    gw = make(u, g, log, lambda: None)
    g.phase = u.INTERNAL
    gw()
    assert log == [("CALL", "mod.fn", u.fingerprint(), "RESULT", None)]


def test_error_is_one_write_and_reraised(u):
    g = u.Gate()
    log = []
    err = OSError(2, "gone")

    def target():
        raise err

    gw = make(u, g, log, target)
    g.phase = u.INTERNAL
    with pytest.raises(OSError) as info:
        gw()
    assert info.value is err
    assert log == [("CALL", "mod.fn", u.fingerprint(), "ERROR", err)]
    assert g.phase == u.INTERNAL


def test_other_results_go_to_slow_after_the_call(u):
    g = u.Gate()
    log = []
    gw = make(u, g, log, lambda: [1, 2], slow=lambda r: ("slow", r, list(log)))
    g.phase = u.INTERNAL
    assert gw() == ("slow", [1, 2], [("CALL", "mod.fn", u.fingerprint())])
    log.clear()
    plain = make(u, g, log, lambda: [3])
    assert plain() == [3]
    assert log == [("CALL", "mod.fn", u.fingerprint()), ("RESULT", [3])]


def test_flush_writes_pending_calls_oldest_first_once(u):
    g = u.Gate()
    log = []
    flushed = []

    def inner_target():
        return "in"

    inner = u.RecordCallGateway(g, inner_target, lambda *v: log.append(v), "CALL", "inner", "RESULT", "ERROR")

    def outer_target(x):
        # External code calling back into the program (which runs INTERNAL).
        flushed.append(u.flush_pending_calls())
        g.phase = u.INTERNAL
        try:
            r = inner()
        finally:
            g.phase = u.EXTERNAL
        flushed.append(u.flush_pending_calls())   # nothing left
        return r + str(x)

    outer = u.RecordCallGateway(g, outer_target, lambda *v: log.append(v), "CALL", "outer", "RESULT", "ERROR")
    g.phase = u.INTERNAL
    assert outer(1) == "in1"
    assert flushed == [1, 0]
    assert log == [
        ("CALL", "outer", u.fingerprint(1)),
        ("CALL", "inner", u.fingerprint(), "RESULT", "in"),
        ("RESULT", "in1"),
    ]
    assert u.flush_pending_calls() == 0


def test_flushed_call_that_raises_writes_only_the_error(u):
    g = u.Gate()
    log = []

    def target():
        u.flush_pending_calls()
        raise KeyError("k")

    gw = make(u, g, log, target)
    g.phase = u.INTERNAL
    with pytest.raises(KeyError):
        gw()
    assert log[0] == ("CALL", "mod.fn", u.fingerprint())
    assert log[1][0] == "ERROR" and type(log[1][1]) is KeyError


def test_failing_write_replaces_the_error_chained(u):
    g = u.Gate()

    def write(*v):
        raise RuntimeError("disk full")

    def target():
        raise ValueError("orig")

    gw = u.RecordCallGateway(g, target, write, "CALL", "n", "RESULT", "ERROR")
    g.phase = u.INTERNAL
    with pytest.raises(RuntimeError) as info:
        gw()
    assert isinstance(info.value.__context__, ValueError)
    ok = u.RecordCallGateway(g, lambda: 1, write, "CALL", "n", "RESULT", "ERROR")
    with pytest.raises(RuntimeError):
        ok()


def test_binds_as_a_method_and_refcounts(u):
    g = u.Gate()
    log = []

    class K:
        def m(self, x):
            return x * 2

    K.m = make(u, g, log, K.__dict__["m"])
    k = K()
    value = object()
    g.phase = u.INTERNAL
    before_k, before_v = sys.getrefcount(k), sys.getrefcount(value)
    for _ in range(50):
        assert k.m(3) == 6
    log.clear()
    raising = make(u, g, log, lambda v: 1 / 0)
    for _ in range(20):
        with pytest.raises(ZeroDivisionError):
            raising(value)
    log.clear()
    assert sys.getrefcount(k) == before_k and sys.getrefcount(value) == before_v
