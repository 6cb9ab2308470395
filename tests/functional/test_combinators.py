"""Behaviour of every combinator, run against both backends (fixture ``F``)."""
import gc
import pickle
import sys
import weakref

import pytest

from retracesoftware.functional._python import __all__ as PYTHON_ALL


class Leaf:
    """An object with a weakref slot, to observe collection."""


def record(log, tag):
    def fn(*args, **kwargs):
        log.append((tag, args, kwargs))
        return tag
    return fn


def test_both_backends_export_the_whole_contract(F):
    import retracesoftware.functional as public
    assert sorted(public.__all__) == sorted(PYTHON_ALL)
    for name in public.__all__:
        assert callable(getattr(F, name)), name


# -- identity / first_arg / nth_arg / is_none ---------------------------------

def test_identity_returns_its_argument(F):
    obj = object()
    assert F.identity(obj) is obj


@pytest.mark.parametrize("args", [(), (1, 2)])
def test_identity_wrong_arity(F, args):
    with pytest.raises(TypeError, match=rf"^identity\(\) takes exactly one argument \({len(args)} given\)$"):
        F.identity(*args)


def test_identity_rejects_keywords(F):
    with pytest.raises(TypeError, match=r"^identity\(\) takes no keyword arguments$"):
        F.identity(x=1)


def test_first_arg(F):
    a = object()
    assert F.first_arg(a, 2, 3, key="ignored") is a
    with pytest.raises(TypeError, match=r"^first_arg\(\) takes at least 1 positional argument \(0 given\)$"):
        F.first_arg(key=1)


def test_nth_arg(F):
    third = F.nth_arg(2)
    assert third(0, 1, "two", 3, k=4) == "two"
    assert third.n == 2 and type(third.n) is int
    with pytest.raises(TypeError, match=r"^nth_arg\(2\) takes at least 3 positional arguments \(2 given\)$"):
        third(0, 1, k=2)
    assert F.nth_arg(0)("a") == "a"
    with pytest.raises(TypeError, match=r"^nth_arg\(0\) takes at least 1 positional argument \(0 given\)$"):
        F.nth_arg(0)()


def test_nth_arg_validates_n(F):
    with pytest.raises(TypeError, match=r"^nth_arg\(\) argument 1 must be int, not str$"):
        F.nth_arg("1")
    with pytest.raises(ValueError, match=r"^nth_arg\(\) argument 1 must be >= 0, not -1$"):
        F.nth_arg(-1)
    with pytest.raises(OverflowError):
        F.nth_arg(2 ** 70)
    assert F.nth_arg(True).n == 1


def test_is_none(F):
    assert F.is_none(None) is True
    assert F.is_none(0) is False
    with pytest.raises(TypeError, match=r"^is_none\(\) takes exactly one argument \(2 given\)$"):
        F.is_none(None, None)


# -- compose / sequence / partial -------------------------------------------------

def test_compose_applies_right_to_left(F):
    log = []
    c = F.compose(lambda x: ("f", x), lambda x: ("g", x), record(log, "h"))
    assert c(1, k=2) == ("f", ("g", "h"))
    assert log == [("h", (1,), {"k": 2})]
    assert len(c.functions) == 3


def test_sequence_applies_left_to_right(F):
    s = F.sequence(lambda x, y=0: x + y, lambda x: x * 10, str)
    assert s(1, y=2) == "30"
    assert F.sequence(abs)(-4) == 4
    assert s.functions[2] is str


def test_compose_single_function_is_a_plain_call(F):
    assert F.compose(max)(3, 9, 4) == 9


def test_compose_validates(F):
    with pytest.raises(TypeError, match=r"^compose expected at least 1 argument, got 0$"):
        F.compose()
    with pytest.raises(TypeError, match=r"^compose\(\) argument 2 must be callable, not int$"):
        F.compose(str, 5)
    with pytest.raises(TypeError, match=r"^sequence\(\) takes no keyword arguments$"):
        F.sequence(str, key=1)


def test_compose_propagates_errors_and_stops(F):
    log = []
    c = F.compose(record(log, "outer"), lambda x: 1 / x)
    with pytest.raises(ZeroDivisionError):
        c(0)
    assert log == []


def test_partial_binds_positionals_and_keywords(F):
    log = []
    p = F.partial(record(log, "r"), 1, 2, a="A", b="B")
    assert p(3, b="b2", c="C") == "r"
    assert log == [("r", (1, 2, 3), {"a": "A", "b": "b2", "c": "C"})]
    assert p.args == (1, 2)
    assert p.keywords == {"a": "A", "b": "B"}
    p.keywords["a"] = "mutated"  # a copy: the bound keywords are unchanged
    assert p.keywords["a"] == "A"


def test_partial_many_arguments_spill_to_heap(F):
    p = F.partial(lambda *a, **k: (a, k), *range(12))
    assert p(*range(12, 20), z=1) == (tuple(range(20)), {"z": 1})


def test_partial_without_bound_arguments(F):
    assert F.partial(divmod)(7, 2) == (3, 1)


def test_partial_validates(F):
    with pytest.raises(TypeError, match=r"^partial expected at least 1 argument, got 0$"):
        F.partial()
    with pytest.raises(TypeError, match=r"^partial\(\) argument 1 must be callable, not NoneType$"):
        F.partial(None, 1)


def test_partial_duplicate_argument_is_the_callees_error(F):
    def f(a, b):
        return a, b
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        F.partial(f, 1)(a=2)


# -- constantly / repeatedly / side_effect ----------------------------------------

def test_constantly(F):
    v = object()
    c = F.constantly(v)
    assert c() is v and c(1, 2, k=3) is v and c.value is v
    assert F.constantly(len)() is len  # a callable value is returned, not called
    with pytest.raises(TypeError, match=r"^constantly expected 1 argument, got 2$"):
        F.constantly(1, 2)


def test_repeatedly(F):
    counter = iter(range(100))
    r = F.repeatedly(lambda: next(counter))
    assert [r(), r("ignored", k=1), r()] == [0, 1, 2]
    with pytest.raises(TypeError, match=r"^repeatedly\(\) argument 1 must be callable, not int$"):
        F.repeatedly(3)


def test_side_effect(F):
    log = []
    s = F.side_effect(record(log, "effect"))
    x = object()
    assert s(x, 2, k=3) is x
    assert log == [("effect", (x, 2), {"k": 3})]
    with pytest.raises(TypeError, match=r"^side_effect\(\) takes at least 1 positional argument \(0 given\)$"):
        s(k=1)
    boom = F.side_effect(lambda x: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        boom(1)


# -- conditionals -------------------------------------------------------------

def test_if_then_else(F):
    ite = F.if_then_else(lambda x, **k: x > 0, lambda x, **k: ("pos", k), lambda x, **k: ("neg", k))
    assert ite(1, a=1) == ("pos", {"a": 1})
    assert ite(-1) == ("neg", {})
    assert (ite.condition(5), ite.then(1)[0], ite.otherwise(1)[0]) == (True, "pos", "neg")
    with pytest.raises(TypeError, match=r"^if_then_else expected 3 arguments, got 2$"):
        F.if_then_else(bool, str)
    with pytest.raises(TypeError, match=r"^if_then_else\(\) argument 3 must be callable, not str$"):
        F.if_then_else(bool, str, "x")


class Untruthy:
    def __bool__(self):
        raise RuntimeError("no truth")


def test_truthiness_errors_propagate(F):
    bad = lambda *a: Untruthy()  # noqa: E731
    for combinator in (F.if_then_else(bad, str, str), F.not_(bad), F.and_(bad), F.or_(bad),
                       F.dispatch([(bad, str)], str)):
        with pytest.raises(RuntimeError, match="no truth"):
            combinator(1)


def test_dispatch_first_matching_case_wins(F):
    d = F.dispatch(
        [(F.isinstance_of(bool), lambda x: "bool"),
         (F.isinstance_of(int), lambda x: "int"),
         (F.isinstance_of(str), lambda x: "str")],
        lambda x: "other")
    assert [d(True), d(3), d("s"), d(1.5)] == ["bool", "int", "str", "other"]
    assert len(d.cases) == 3 and all(len(c) == 2 for c in d.cases)
    assert d.default(0) == "other"


def test_dispatch_accepts_any_iterable_and_passes_keywords(F):
    d = F.dispatch(iter([(lambda x, k: k, lambda x, k: x)]), lambda x, k: None)
    assert d(5, k=True) == 5 and d(5, k=False) is None


def test_dispatch_validates(F):
    with pytest.raises(TypeError, match=r"^dispatch expected 2 arguments, got 1$"):
        F.dispatch([])
    with pytest.raises(TypeError, match=r"^dispatch\(\) argument 1 must be an iterable"):
        F.dispatch(5, str)
    with pytest.raises(TypeError, match=r"^dispatch\(\) case 1 must be a \(predicate, function\) tuple, not list$"):
        F.dispatch([(bool, str), [bool, str]], str)
    with pytest.raises(TypeError, match=r"^dispatch\(\) case 0 function must be callable, not int$"):
        F.dispatch([(bool, 1)], str)
    with pytest.raises(TypeError, match=r"^dispatch\(\) argument 2 must be callable, not NoneType$"):
        F.dispatch([], None)


# -- predicates ----------------------------------------------------------------

def test_isinstance_of(F):
    p = F.isinstance_of((int, str))
    assert p(1) is True and p("s") is True and p(1.0) is False
    assert F.isinstance_of(object).cls is object
    with pytest.raises(TypeError, match=r"^isinstance_of\(\) argument 1 must be a type or a tuple of types, not int$"):
        F.isinstance_of(3)
    with pytest.raises(TypeError, match=r"^isinstance_of\(\) takes exactly one argument \(2 given\)$"):
        p(1, 2)
    with pytest.raises(TypeError, match=r"^isinstance_of\(\) takes no keyword arguments$"):
        p(x=1)


def test_isinstance_of_honours_instancecheck(F):
    class Meta(type):
        def __instancecheck__(cls, obj):
            return obj == "magic"

    class Magic(metaclass=Meta):
        pass

    p = F.isinstance_of(Magic)
    assert p("magic") is True and p("plain") is False


def test_not_and_or(F):
    calls = []

    def t(*a, **k):
        calls.append("t")
        return 1

    def f(*a, **k):
        calls.append("f")
        return 0

    assert F.not_(f)(1) is True and F.not_(t)() is False
    calls.clear()
    assert F.and_(t, f, t)(1, k=2) is False and calls == ["t", "f"]
    calls.clear()
    assert F.or_(f, t, f)() is True and calls == ["f", "t"]
    assert F.and_(t)() is True and F.or_(f)() is False
    assert F.and_(t, f).predicates == (t, f)
    assert F.not_(t).predicate is t
    with pytest.raises(TypeError, match=r"^and_ expected at least 1 argument, got 0$"):
        F.and_()
    with pytest.raises(TypeError, match=r"^or_\(\) argument 2 must be callable, not int$"):
        F.or_(t, 2)


# -- memoize_one_arg ---------------------------------------------------------------

def test_memoize_one_arg_caches_results(F):
    calls = []

    def square(x):
        calls.append(x)
        return x * x

    m = F.memoize_one_arg(square)
    assert [m(3), m(3), m(4), m(3)] == [9, 9, 16, 9]
    assert calls == [3, 4]
    assert m.cache == {3: 9, 4: 16}
    m.cache.clear()
    assert m(3) == 9 and calls == [3, 4, 3]
    assert m.func is square


def test_memoize_one_arg_does_not_cache_errors(F):
    attempts = []

    def flaky(x):
        attempts.append(x)
        if len(attempts) == 1:
            raise ValueError("first time")
        return x

    m = F.memoize_one_arg(flaky)
    with pytest.raises(ValueError):
        m(1)
    assert m(1) == 1 and m(1) == 1 and attempts == [1, 1]


def test_memoize_one_arg_errors(F):
    m = F.memoize_one_arg(str)
    with pytest.raises(TypeError, match="unhashable"):
        m([])
    with pytest.raises(TypeError, match=r"^memoize_one_arg\(\) takes exactly one argument \(0 given\)$"):
        m()
    with pytest.raises(TypeError, match=r"^memoize_one_arg\(\) takes no keyword arguments$"):
        m(1, k=2)


# -- walker ---------------------------------------------------------------------

def test_walker_rebuilds_containers_of_the_same_type(F):
    w = F.walker(lambda leaf: leaf * 2 if isinstance(leaf, int) else leaf)
    data = {"a": [1, (2, 3)], "b": ({"c": 4},), 5: "s"}
    out = w(data)
    assert out == {"a": [2, (4, 6)], "b": ({"c": 8},), 5: "s"}
    assert type(out["a"]) is list and type(out["a"][1]) is tuple and type(out["b"]) is tuple
    assert out is not data and out["a"] is not data["a"]
    assert list(out) == ["a", "b", 5]  # key order kept
    assert w(7) == 14
    assert w(()) == () and w([]) == [] and w({}) == {}


def test_walker_treats_subclasses_as_leaves(F):
    from collections import OrderedDict, namedtuple
    Point = namedtuple("Point", "x y")
    seen = []
    w = F.walker(lambda leaf: seen.append(leaf) or leaf)
    p, od = Point(1, 2), OrderedDict(a=1)
    assert w([p, od]) == [p, od]
    assert seen == [p, od]


def test_walker_self_referencing_container_raises_recursion_error(F):
    loop = []
    loop.append(loop)
    with pytest.raises(RecursionError):
        F.walker(lambda x: x)(loop)


def test_walker_propagates_leaf_errors(F):
    with pytest.raises(ZeroDivisionError):
        F.walker(lambda x: 1 / x)([1, (0,)])
    with pytest.raises(TypeError, match=r"^walker\(\) takes exactly one argument \(2 given\)$"):
        F.walker(str)(1, 2)


def test_walker_list_mutated_during_walk(F):
    data = [1, 2, 3]

    def shrink(x):
        if x == 1:
            data.pop()
        return x

    assert F.walker(shrink)(data) == [1, 2]


# -- handle / apply_with ---------------------------------------------------------

def test_handle_returns_handler_result_for_matching_exceptions(F):
    def f(x, k=1):
        return x / k

    h = F.handle(f, (ZeroDivisionError, KeyError), lambda exc: ("handled", type(exc).__name__))
    assert h(4, k=2) == 2
    assert h(4, k=0) == ("handled", "ZeroDivisionError")
    assert h.func is f and h.exc_types == (ZeroDivisionError, KeyError)


def test_handle_lets_other_exceptions_through(F):
    def boom():
        raise ValueError("not mine")

    with pytest.raises(ValueError, match="not mine"):
        F.handle(boom, KeyError, lambda exc: None)()


def test_handle_handler_sees_exception_with_traceback_and_as_handled(F):
    seen = {}

    def handler(exc):
        seen["exc"] = exc
        seen["handled"] = sys.exc_info()[1]
        return "ok"

    def boom():
        raise KeyError("k")

    assert F.handle(boom, LookupError, handler)() == "ok"
    assert isinstance(seen["exc"], KeyError)
    assert seen["exc"].__traceback__ is not None
    assert seen["handled"] is seen["exc"]
    assert sys.exc_info() == (None, None, None)


def test_handle_handler_error_is_chained(F):
    def handler(exc):
        raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError) as info:
        F.handle(lambda: 1 / 0, ZeroDivisionError, handler)()
    assert isinstance(info.value.__context__, ZeroDivisionError)


def test_handle_restores_outer_handled_exception(F):
    h = F.handle(lambda: 1 / 0, ZeroDivisionError, lambda e: None)
    try:
        raise KeyError("outer")
    except KeyError as outer:
        h()
        assert sys.exc_info()[1] is outer


def test_handle_validates(F):
    with pytest.raises(TypeError, match=r"^handle\(\) argument 2 must be an exception class or a tuple of exception "
                                        r"classes, not str$"):
        F.handle(str, "ValueError", str)
    with pytest.raises(TypeError, match=r"^handle\(\) argument 2 .* not tuple$"):
        F.handle(str, (ValueError, int), str)
    with pytest.raises(TypeError, match=r"^handle\(\) argument 3 must be callable, not int$"):
        F.handle(str, ValueError, 3)
    with pytest.raises(TypeError, match=r"^handle expected 3 arguments, got 2$"):
        F.handle(str, ValueError)


def test_apply_with_transforms_every_argument(F):
    log = []
    a = F.apply_with(record(log, "f"), lambda v: ("t", v))
    assert a(1, 2, k=3) == "f"
    assert log == [("f", (("t", 1), ("t", 2)), {"k": ("t", 3)})]
    assert F.apply_with(lambda: "none", str)() == "none"


def test_apply_with_stops_at_first_transform_error(F):
    calls = []

    def t(v):
        calls.append(v)
        if v == "bad":
            raise ValueError(v)
        return v

    with pytest.raises(ValueError):
        F.apply_with(lambda *a, **k: None, t)(1, "bad", 3, k=4)
    assert calls == [1, "bad"]


def test_apply_with_many_arguments(F):
    a = F.apply_with(lambda *a, **k: (a, k), lambda v: v + 1)
    assert a(*range(20), x=0, y=1) == (tuple(range(1, 21)), {"x": 1, "y": 2})


# -- object protocol: descriptors, attributes, repr, pickling, GC ------------------

def make_all(F):
    """One instance of every combinator type."""
    return [
        F.compose(str), F.sequence(str), F.partial(str, 1), F.constantly(1), F.repeatedly(str),
        F.if_then_else(bool, str, repr), F.dispatch([(bool, str)], repr), F.memoize_one_arg(str),
        F.nth_arg(0), F.isinstance_of(int), F.not_(bool), F.and_(bool), F.or_(bool), F.walker(str),
        F.side_effect(str), F.handle(str, ValueError, repr), F.apply_with(str, repr),
    ]


def test_combinators_do_not_bind_as_methods(F):
    class Host:
        ident = F.identity
        first = F.first_arg
        composed = F.compose(F.identity)
        bound = F.partial(F.first_arg, "bound")
        const = F.constantly("c")

    h = Host()
    assert h.ident("x") == "x"  # no self inserted
    assert h.first("y") == "y"
    assert h.composed("z") == "z"
    assert h.bound("w") == "bound"
    assert Host.composed is Host.__dict__["composed"]
    assert h.composed is Host.__dict__["composed"]
    for obj in make_all(F):
        assert not hasattr(type(obj), "__get__"), type(obj)


def test_attributes_are_read_only_and_there_is_no_instance_dict(F):
    c = F.compose(str)
    with pytest.raises(AttributeError):
        c.functions = (repr,)
    with pytest.raises(AttributeError):
        c.anything = 1


def test_types_cannot_be_subclassed(F):
    for obj in make_all(F):
        with pytest.raises(TypeError, match="not an acceptable base type"):
            type("Sub", (type(obj),), {})


def test_combinators_refuse_to_pickle(F):
    for obj in make_all(F):
        with pytest.raises(TypeError, match=rf"cannot pickle '{type(obj).__name__}' object"):
            pickle.dumps(obj)


def test_type_names(F):
    for obj, name in zip(make_all(F), [
            "compose", "sequence", "partial", "constantly", "repeatedly", "if_then_else", "dispatch",
            "memoize_one_arg", "nth_arg", "isinstance_of", "not_", "and_", "or_", "walker",
            "side_effect", "handle", "apply_with"]):
        assert type(obj).__name__ == name
        assert type(obj) is getattr(F, name)


def test_reprs(F):
    assert repr(F.compose(str, abs)) == "compose(<class 'str'>, <built-in function abs>)"
    assert repr(F.partial(max, 1, key=abs)) == "partial(<built-in function max>, 1, key=<built-in function abs>)"
    assert repr(F.constantly("v")) == "constantly('v')"
    assert repr(F.nth_arg(3)) == "nth_arg(3)"
    assert repr(F.dispatch([(bool, str)], repr)) == (
        "dispatch(((<class 'bool'>, <class 'str'>),), <built-in function repr>)")
    assert repr(F.memoize_one_arg(str)) == "memoize_one_arg(<class 'str'>)"
    assert repr(F.handle(str, KeyError, repr)) == (
        "handle(<class 'str'>, <class 'KeyError'>, <built-in function repr>)")


def test_reference_cycles_through_combinators_are_collected(F):
    makers = [
        lambda h: F.constantly(h), lambda h: F.compose(lambda x: h), lambda h: F.partial(str, h),
        lambda h: F.partial(str, k=h), lambda h: F.dispatch([(bool, lambda x: h)], str),
        lambda h: F.handle(str, ValueError, lambda e: h),
    ]
    for make in makers:
        holder = [Leaf()]
        probe = weakref.ref(holder[0])
        holder.append(make(holder))  # holder -> combinator -> holder
        del holder
        gc.collect()
        assert probe() is None, make

    m = F.memoize_one_arg(lambda key: m)  # cache value is the memoizer itself
    leaf = Leaf()
    probe = weakref.ref(leaf)
    m.cache["leaf"] = leaf
    m(1)
    del m, leaf
    gc.collect()
    assert probe() is None
