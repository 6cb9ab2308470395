"""Reference counts are unchanged after every entry point, on the success path
and on the error paths: each constructor, each call, each module function.

Run against both backends; the C++ one is what these guard (a missing
Py_DECREF leaks one reference per call, which 20 calls make plain).
"""
import sys

import pytest

ROUNDS = 20


class Token:
    """A fresh, mortal object whose refcount nothing else touches."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Token({self.name})"

    def __hash__(self):
        return hash(self.name)

    def __eq__(self, other):
        return isinstance(other, Token) and other.name == self.name


def ok(*args, **kwargs):
    return args[0] if args else None


def fail(*args, **kwargs):
    raise ValueError("fail")


def truthy(*args, **kwargs):
    return True


def falsy(*args, **kwargs):
    return False


def raises(exc_type, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type:
        return
    raise AssertionError(f"{fn!r} did not raise {exc_type.__name__}")


def assert_refcounts_stable(thunk, objs):
    thunk()  # warm-up: first-call caches, specialisation
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(ROUNDS):
        thunk()
    after = [sys.getrefcount(o) for o in objs]
    assert after == before, list(zip(objs, before, after))


def cases(F):
    """(name, thunk, tracked objects) for every entry point and path."""
    x, y, v = Token("x"), Token("y"), Token("v")
    track = [x, y, v, ok, fail, truthy, falsy]
    T = TypeError

    def built(make):
        obj = make()
        return obj

    compose = F.compose(ok, ok)
    sequence = F.sequence(ok, ok)
    partial_pos = F.partial(ok, x)
    partial_kw = F.partial(ok, x, k=v)
    partial_many = F.partial(ok, *([x] * 12))
    constantly = F.constantly(v)
    repeatedly_ok, repeatedly_fail = F.repeatedly(lambda: v), F.repeatedly(fail)
    ite = F.if_then_else(truthy, ok, fail)
    ite_false = F.if_then_else(falsy, fail, ok)
    dispatch = F.dispatch([(falsy, fail), (truthy, ok)], fail)
    dispatch_default = F.dispatch([(falsy, fail)], ok)
    memo = F.memoize_one_arg(lambda key: v)
    nth = F.nth_arg(1)
    isa = F.isinstance_of(Token)
    not_ = F.not_(truthy)
    and_, or_ = F.and_(truthy, falsy), F.or_(falsy, truthy)
    walker = F.walker(lambda leaf: v)
    side = F.side_effect(ok)
    handle = F.handle(fail, ValueError, lambda exc: v)
    handle_miss = F.handle(fail, KeyError, ok)
    handle_bad_handler = F.handle(fail, ValueError, fail)
    apply_with = F.apply_with(ok, lambda a: v)
    apply_with_fail = F.apply_with(ok, fail)
    combinators = [compose, sequence, partial_pos, partial_kw, partial_many, constantly, ite, dispatch,
                   memo, nth, isa, walker, side, handle, apply_with]
    track += combinators
    nested = [x, (y, {"k": x}), {"y": [y]}]
    track.append(nested)

    return track, [
        # module functions
        ("identity", lambda: F.identity(x)),
        ("identity-arity", lambda: raises(T, F.identity, x, y)),
        ("identity-kw", lambda: raises(T, F.identity, x, k=y)),
        ("first_arg", lambda: F.first_arg(x, y, k=v)),
        ("first_arg-empty", lambda: raises(T, F.first_arg, k=v)),
        ("is_none", lambda: F.is_none(x)),
        ("is_none-arity", lambda: raises(T, F.is_none, x, y)),
        # constructors, success and error
        ("new-compose", lambda: built(lambda: F.compose(ok, fail))),
        ("new-compose-error", lambda: raises(T, F.compose, ok, x)),
        ("new-compose-kw-error", lambda: raises(T, F.compose, ok, k=ok)),
        ("new-sequence", lambda: built(lambda: F.sequence(ok, fail))),
        ("new-sequence-error", lambda: raises(T, F.sequence, x)),
        ("new-partial", lambda: built(lambda: F.partial(ok, x, y, k=v))),
        ("new-partial-error", lambda: raises(T, F.partial, x, y)),
        ("new-constantly", lambda: built(lambda: F.constantly(v))),
        ("new-constantly-error", lambda: raises(T, F.constantly, x, y)),
        ("new-repeatedly", lambda: built(lambda: F.repeatedly(ok))),
        ("new-repeatedly-error", lambda: raises(T, F.repeatedly, x)),
        ("new-if_then_else", lambda: built(lambda: F.if_then_else(ok, ok, fail))),
        ("new-if_then_else-error", lambda: raises(T, F.if_then_else, ok, ok, x)),
        ("new-dispatch", lambda: built(lambda: F.dispatch([(ok, fail)], ok))),
        ("new-dispatch-error-case", lambda: raises(T, F.dispatch, [(ok, x)], ok)),
        ("new-dispatch-error-shape", lambda: raises(T, F.dispatch, [x], ok)),
        ("new-dispatch-error-default", lambda: raises(T, F.dispatch, [(ok, ok)], x)),
        ("new-dispatch-error-iterable", lambda: raises(T, F.dispatch, x, ok)),
        ("new-memoize", lambda: built(lambda: F.memoize_one_arg(ok))),
        ("new-memoize-error", lambda: raises(T, F.memoize_one_arg, x)),
        ("new-nth_arg", lambda: built(lambda: F.nth_arg(3))),
        ("new-nth_arg-error", lambda: raises(T, F.nth_arg, x)),
        ("new-nth_arg-negative", lambda: raises(ValueError, F.nth_arg, -1)),
        ("new-isinstance_of", lambda: built(lambda: F.isinstance_of((Token, int)))),
        ("new-isinstance_of-error", lambda: raises(T, F.isinstance_of, x)),
        ("new-not_", lambda: built(lambda: F.not_(ok))),
        ("new-not_-error", lambda: raises(T, F.not_, x)),
        ("new-and_", lambda: built(lambda: F.and_(ok, fail))),
        ("new-and_-error", lambda: raises(T, F.and_, ok, x)),
        ("new-or_", lambda: built(lambda: F.or_(ok, fail))),
        ("new-or_-error", lambda: raises(T, F.or_, x)),
        ("new-walker", lambda: built(lambda: F.walker(ok))),
        ("new-walker-error", lambda: raises(T, F.walker, x)),
        ("new-side_effect", lambda: built(lambda: F.side_effect(ok))),
        ("new-side_effect-error", lambda: raises(T, F.side_effect, x)),
        ("new-handle", lambda: built(lambda: F.handle(ok, ValueError, fail))),
        ("new-handle-error-types", lambda: raises(T, F.handle, ok, x, fail)),
        ("new-handle-error-handler", lambda: raises(T, F.handle, ok, ValueError, x)),
        ("new-apply_with", lambda: built(lambda: F.apply_with(ok, fail))),
        ("new-apply_with-error", lambda: raises(T, F.apply_with, ok, x)),
        # calls, success and error
        ("compose", lambda: compose(x, k=y)),
        ("compose-error", lambda: raises(ValueError, F.compose(ok, fail), x, k=y)),
        ("compose-outer-error", lambda: raises(ValueError, F.compose(fail, ok), x)),
        ("sequence", lambda: sequence(x, k=y)),
        ("sequence-error", lambda: raises(ValueError, F.sequence(ok, fail), x)),
        ("partial-positional", lambda: partial_pos(y, k=v)),
        ("partial-keywords", lambda: partial_kw(y, j=v)),
        ("partial-heap", lambda: partial_many(*([y] * 12), k=v)),
        ("partial-error", lambda: raises(ValueError, F.partial(fail, x), y, k=v)),
        ("partial-kw-error", lambda: raises(ValueError, F.partial(fail, x, k=v), y, j=v)),
        ("constantly", lambda: constantly(x, k=y)),
        ("repeatedly", lambda: repeatedly_ok(x)),
        ("repeatedly-error", lambda: raises(ValueError, repeatedly_fail, x)),
        ("if_then_else", lambda: ite(x, k=y)),
        ("if_then_else-false", lambda: ite_false(x, k=y)),
        ("if_then_else-error", lambda: raises(ValueError, F.if_then_else(fail, ok, ok), x)),
        ("dispatch", lambda: dispatch(x, k=y)),
        ("dispatch-default", lambda: dispatch_default(x)),
        ("dispatch-error", lambda: raises(ValueError, F.dispatch([(fail, ok)], ok), x)),
        ("memoize-hit", lambda: memo(x)),
        ("memoize-miss", lambda: (memo.cache.clear(), memo(y))),
        ("memoize-error", lambda: raises(ValueError, F.memoize_one_arg(fail), x)),
        ("memoize-unhashable", lambda: raises(T, memo, [x])),
        ("memoize-arity", lambda: raises(T, memo, x, y)),
        ("nth_arg", lambda: nth(x, y, k=v)),
        ("nth_arg-error", lambda: raises(T, nth, x)),
        ("isinstance_of", lambda: isa(x)),
        ("isinstance_of-arity", lambda: raises(T, isa, x, y)),
        ("not_", lambda: not_(x, k=y)),
        ("not_-error", lambda: raises(ValueError, F.not_(fail), x)),
        ("and_", lambda: and_(x, k=y)),
        ("and_-error", lambda: raises(ValueError, F.and_(truthy, fail), x)),
        ("or_", lambda: or_(x, k=y)),
        ("or_-error", lambda: raises(ValueError, F.or_(falsy, fail), x)),
        ("walker", lambda: walker(nested)),
        ("walker-error", lambda: raises(ValueError, F.walker(fail), nested)),
        ("walker-arity", lambda: raises(T, walker, nested, x)),
        ("side_effect", lambda: side(x, y, k=v)),
        ("side_effect-error", lambda: raises(ValueError, F.side_effect(fail), x)),
        ("side_effect-arity", lambda: raises(T, side, k=v)),
        ("handle-ok", lambda: F.handle(ok, ValueError, fail)(x, k=y)),
        ("handle-caught", lambda: handle(x, k=y)),
        ("handle-missed", lambda: raises(ValueError, handle_miss, x)),
        ("handle-handler-error", lambda: raises(ValueError, handle_bad_handler, x)),
        ("apply_with", lambda: apply_with(x, y, k=v)),
        ("apply_with-heap", lambda: apply_with(*([x] * 12), k=v)),
        ("apply_with-error", lambda: raises(ValueError, apply_with_fail, x, y, k=v)),
    ]


_NAMES = [name for name, _ in cases(__import__("retracesoftware.functional._python", fromlist=["_"]))[1]]


@pytest.mark.parametrize("index", range(len(_NAMES)), ids=_NAMES)
def test_refcounts_stable(F, index):
    tracked, table = cases(F)
    _, thunk = table[index]
    assert_refcounts_stable(thunk, tracked)


def test_refcount_check_detects_a_leak():
    leaked = []
    x = Token("x")
    with pytest.raises(AssertionError):
        assert_refcounts_stable(lambda: leaked.append(x), [x])
