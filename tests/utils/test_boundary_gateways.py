"""MethodGateway (per-instance dispatch) and NewGateway (patched __new__),
both backends; patch_type restores tp_new exactly after patching __new__."""
import _random
import random
import sys

import pytest


class Target:
    def __init__(self, x=0):
        self.x = x

    def method(self, a, b=2):
        return ("real", self.x, a, b)


def test_method_gateway_dispatches_on_id_in_bound(u):
    bound = {}
    log = []

    def gateway(self_, *a, **kw):
        log.append((self_, a, kw))
        return "gateway"

    mg = u.MethodGateway(bound, gateway, Target.method)
    a, b = Target(1), Target(2)
    bound[id(a)] = a
    assert mg(a, 5, b=6) == "gateway" and log == [(a, (5,), {"b": 6})]
    assert mg(b, 5) == ("real", 2, 5, 2)
    del bound[id(a)]
    assert mg(a, 7) == ("real", 1, 7, 2)
    assert mg.__wrapped__ is Target.method and mg.__name__ == "method"
    assert mg.bound is bound and mg.gateway is gateway and mg.real is Target.method


def test_method_gateway_binds_like_a_function_in_a_class(u):
    bound = set()
    cls = type("K", (Target,), {})
    cls.method = u.MethodGateway(bound, lambda self_, a, b=0: ("gw", a, b), Target.method)
    k = cls(3)
    assert k.method(1) == ("real", 3, 1, 2)
    bound.add(id(k))
    assert k.method(1, b=9) == ("gw", 1, 9)
    m = k.method
    assert m.__self__ is k and m.__func__ is cls.__dict__["method"]


def test_method_gateway_errors_and_refcounts(u):
    bound = {}
    mg = u.MethodGateway(bound, lambda s: 1, lambda s: 2)
    with pytest.raises(TypeError, match="first argument"):
        mg()
    with pytest.raises(TypeError):
        u.MethodGateway(bound, 1, lambda s: 2)
    obj = Target()
    before = sys.getrefcount(obj)
    for _ in range(100):
        mg(obj)
    bound[id(obj)] = None
    for _ in range(100):
        mg(obj)
    raising = u.MethodGateway(bound, lambda s: 1 / 0, lambda s: 2)
    for _ in range(10):
        with pytest.raises(ZeroDivisionError):
            raising(obj)
    assert sys.getrefcount(obj) == before


def test_new_gateway_binds_only_while_internal(u):
    g = u.Gate()
    seen = []

    class A:
        def __init__(self, x):
            self.x = x

    class B(A):
        pass

    token = u.patch_type(A, {"__new__": u.NewGateway(A, g, seen.append)})
    try:
        a = A(1)                       # DISABLED: not reported
        g.phase = u.INTERNAL
        b = B(2)
        g.phase = u.EXTERNAL
        c = A(3)                       # inside an external call: not reported
        g.phase = u.DISABLED
        assert (a.x, b.x, c.x) == (1, 2, 3)
        assert seen == [b]
        with pytest.raises(TypeError, match="takes no arguments"):
            class N:
                pass
            u.patch_type(N, {"__new__": u.NewGateway(N, g)})
            N(1)
    finally:
        u.unpatch_type(token)


def test_new_gateway_calls_a_c_types_tp_new_directly(u):
    g = u.Gate()
    seen = []
    token = u.patch_type(_random.Random, {"__new__": u.NewGateway(_random.Random, g, seen.append)})
    try:
        g.phase = u.INTERNAL
        r = random.Random(11)          # a Python subclass whose __init__ never calls the base's
        raw = _random.Random(11)
        g.phase = u.DISABLED
        assert [type(o) for o in seen] == [random.Random, _random.Random]
        assert r.random() == random.Random(11).random()
        assert raw.random() == _random.Random(11).random()
    finally:
        u.unpatch_type(token)


def test_new_gateway_python_level_new_and_errors(u):
    g = u.Gate()
    made = []

    class P:
        def __new__(cls, *args):
            made.append(args)
            return super().__new__(cls)

    ng = u.NewGateway(P, g)
    token = u.patch_type(P, {"__new__": ng})
    try:
        assert type(P(1, 2)) is P and made == [(1, 2)]
        with pytest.raises(TypeError):
            ng(int)                    # not a subtype
        with pytest.raises(TypeError):
            ng(5)                      # not a type
        before = sys.getrefcount(P)
        for _ in range(50):
            P()
        assert sys.getrefcount(P) == before
    finally:
        u.unpatch_type(token)
    assert ng.__wrapped__ is P.__dict__["__new__"]


def test_new_gateway_on_new_error_propagates(u):
    g = u.Gate()

    class A:
        pass

    def on_new(obj):
        raise RuntimeError("refused")

    token = u.patch_type(A, {"__new__": u.NewGateway(A, g, on_new)})
    try:
        g.phase = u.INTERNAL
        with pytest.raises(RuntimeError, match="refused"):
            A()
    finally:
        g.phase = u.DISABLED
        u.unpatch_type(token)


def test_unpatching_new_restores_instantiation_exactly(u):
    class Plain:
        def __init__(self, x):
            self.x = x

    class Child(Plain):
        pass

    g = u.Gate()
    t1 = u.patch_type(Plain, {"__new__": u.NewGateway(Plain, g)})
    t2 = u.patch_type(_random.Random, {"__new__": u.NewGateway(_random.Random, g)})

    class MadeWhilePatched(random.Random):
        pass

    class PlainChildWhilePatched(Plain):
        pass

    u.unpatch_type(t2)
    u.unpatch_type(t1)
    # Without the tp_new restore these raise "object.__new__() takes exactly
    # one argument" / "_random.Random.__new__(Random) is not safe".
    assert Plain(1).x == 1 and Child(2).x == 2 and PlainChildWhilePatched(3).x == 3
    assert random.Random(5).random() == _random.Random(5).random() == MadeWhilePatched(5).random()
    assert "__new__" not in Plain.__dict__
    assert type(_random.Random.__dict__["__new__"]).__name__ == "builtin_function_or_method"
