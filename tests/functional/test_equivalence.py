"""Table-driven: both backends give equal results and raise the same exception
types, with the same messages, on the same inputs."""
import pytest


def boom(*args, **kwargs):
    raise ValueError("boom")


def echo(*args, **kwargs):
    return (args, tuple(sorted(kwargs.items())))


def double_ints(leaf):
    return leaf * 2 if type(leaf) is int else leaf


# Each case: (id, function of the backend module returning the value to compare).
CASES = [
    # identity / first_arg / is_none / nth_arg
    ("identity", lambda F: F.identity(5)),
    ("identity-0", lambda F: F.identity()),
    ("identity-2", lambda F: F.identity(1, 2)),
    ("identity-kw", lambda F: F.identity(1, k=2)),
    ("identity-kw-only", lambda F: F.identity(k=2)),
    ("first_arg", lambda F: F.first_arg(1, 2, k=3)),
    ("first_arg-0", lambda F: F.first_arg()),
    ("first_arg-kw-only", lambda F: F.first_arg(k=1)),
    ("is_none-none", lambda F: F.is_none(None)),
    ("is_none-0", lambda F: F.is_none(0)),
    ("is_none-arity", lambda F: F.is_none()),
    ("is_none-kw", lambda F: F.is_none(x=None)),
    ("nth_arg", lambda F: F.nth_arg(1)(1, 2, 3)),
    ("nth_arg-short", lambda F: F.nth_arg(3)(1, 2)),
    ("nth_arg-one", lambda F: F.nth_arg(0)()),
    ("nth_arg-negative", lambda F: F.nth_arg(-2)),
    ("nth_arg-float", lambda F: F.nth_arg(1.0)),
    ("nth_arg-huge", lambda F: F.nth_arg(1 << 80)),
    ("nth_arg-huge-negative", lambda F: F.nth_arg(-(1 << 80))),
    ("nth_arg-bool", lambda F: F.nth_arg(True)(0, 1)),
    ("nth_arg-arity", lambda F: F.nth_arg()),
    ("nth_arg-kw", lambda F: F.nth_arg(n=1)),
    # compose / sequence
    ("compose", lambda F: F.compose(str, abs, int)("-7")),
    ("compose-kw", lambda F: F.compose(repr, echo)(1, k=2)),
    ("compose-empty", lambda F: F.compose()),
    ("compose-noncallable", lambda F: F.compose(str, 3, abs)),
    ("compose-kwargs", lambda F: F.compose(str, f=abs)),
    ("compose-inner-raises", lambda F: F.compose(str, boom)(1)),
    ("compose-outer-raises", lambda F: F.compose(boom, str)(1)),
    ("compose-wrong-arity", lambda F: F.compose(str, abs)(1, 2)),
    ("sequence", lambda F: F.sequence(int, abs, str)("-7")),
    ("sequence-empty", lambda F: F.sequence()),
    ("sequence-noncallable", lambda F: F.sequence(None)),
    # partial
    ("partial", lambda F: F.partial(echo, 1, a=2)(3, b=4)),
    ("partial-override", lambda F: F.partial(echo, a=1)(a=2)),
    ("partial-empty", lambda F: F.partial()),
    ("partial-noncallable", lambda F: F.partial(1, 2)),
    ("partial-dup", lambda F: F.partial(divmod, 1)(2, 3)),
    ("partial-attrs", lambda F: (lambda p: (p.func, p.args, p.keywords))(F.partial(echo, 1, k=2))),
    # constantly / repeatedly / side_effect
    ("constantly", lambda F: F.constantly([1])(9, k=8)),
    ("constantly-arity", lambda F: F.constantly()),
    ("constantly-kw", lambda F: F.constantly(value=1)),
    ("repeatedly", lambda F: F.repeatedly(list)(1, 2)),
    ("repeatedly-raises", lambda F: F.repeatedly(boom)()),
    ("repeatedly-arity", lambda F: F.repeatedly(list, 1)),
    ("side_effect", lambda F: F.side_effect(echo)("x", k=1)),
    ("side_effect-none", lambda F: F.side_effect(echo)()),
    ("side_effect-raises", lambda F: F.side_effect(boom)(1)),
    # conditionals
    ("if_then_else-true", lambda F: F.if_then_else(bool, str, repr)(1)),
    ("if_then_else-false", lambda F: F.if_then_else(bool, str, repr)("")),
    ("if_then_else-arity", lambda F: F.if_then_else(bool)),
    ("if_then_else-noncallable", lambda F: F.if_then_else(bool, str, 1)),
    ("if_then_else-cond-raises", lambda F: F.if_then_else(boom, str, repr)(1)),
    ("dispatch", lambda F: F.dispatch([(F.is_none, F.constantly("none")), (bool, str)], repr)(5)),
    ("dispatch-default", lambda F: F.dispatch([(F.is_none, str)], repr)(0)),
    ("dispatch-empty", lambda F: F.dispatch([], repr)("x")),
    ("dispatch-bad-iterable", lambda F: F.dispatch(1, repr)),
    ("dispatch-bad-case", lambda F: F.dispatch([bool], repr)),
    ("dispatch-short-case", lambda F: F.dispatch([(bool,)], repr)),
    ("dispatch-bad-predicate", lambda F: F.dispatch([(1, str)], repr)),
    ("dispatch-bad-default", lambda F: F.dispatch([], 1)),
    ("dispatch-pred-raises", lambda F: F.dispatch([(boom, str)], repr)(1)),
    ("dispatch-cases", lambda F: F.dispatch([(bool, str)], repr).cases),
    # predicates
    ("isinstance_of", lambda F: F.isinstance_of(int)(3)),
    ("isinstance_of-tuple", lambda F: F.isinstance_of((str, bytes))(3)),
    ("isinstance_of-bad", lambda F: F.isinstance_of("int")),
    ("isinstance_of-bad-tuple", lambda F: F.isinstance_of((int, "x"))),
    ("isinstance_of-arity", lambda F: F.isinstance_of(int)()),
    ("isinstance_of-kw", lambda F: F.isinstance_of(int)(1, k=1)),
    ("not_", lambda F: F.not_(bool)(0)),
    ("not_-arity", lambda F: F.not_(bool, bool)),
    ("not_-raises", lambda F: F.not_(boom)()),
    ("and_", lambda F: F.and_(bool, F.not_(F.is_none))(1)),
    ("and_-false", lambda F: F.and_(bool, boom)(0)),
    ("and_-raises", lambda F: F.and_(bool, boom)(1)),
    ("or_", lambda F: F.or_(F.is_none, bool)(0)),
    ("or_-short", lambda F: F.or_(bool, boom)(1)),
    ("or_-empty", lambda F: F.or_()),
    # memoize_one_arg
    ("memoize", lambda F: (lambda m: (m(2), m(2), m.cache))(F.memoize_one_arg(lambda x: [x]))),
    ("memoize-unhashable", lambda F: F.memoize_one_arg(str)({})),
    ("memoize-raises", lambda F: F.memoize_one_arg(boom)(1)),
    ("memoize-arity", lambda F: F.memoize_one_arg(str)(1, 2)),
    ("memoize-noncallable", lambda F: F.memoize_one_arg(None)),
    # walker
    ("walker", lambda F: F.walker(double_ints)({"a": [1, (2, {"b": 3})], "c": "s", 4: None})),
    ("walker-leaf", lambda F: F.walker(double_ints)(21)),
    ("walker-empty", lambda F: F.walker(double_ints)([(), {}, []])),
    ("walker-raises", lambda F: F.walker(boom)([1])),
    ("walker-arity", lambda F: F.walker(str)()),
    ("walker-noncallable", lambda F: F.walker([])),
    # handle / apply_with
    ("handle-ok", lambda F: F.handle(echo, ValueError, repr)(1)),
    ("handle-caught", lambda F: F.handle(boom, ValueError, repr)(1)),
    ("handle-caught-tuple", lambda F: F.handle(boom, (KeyError, Exception), repr)()),
    ("handle-missed", lambda F: F.handle(boom, KeyError, repr)()),
    ("handle-bad-types", lambda F: F.handle(boom, [ValueError], repr)),
    ("handle-noncallable", lambda F: F.handle(1, ValueError, repr)),
    ("handle-handler-raises", lambda F: F.handle(boom, ValueError, boom)()),
    ("apply_with", lambda F: F.apply_with(echo, str)(1, 2, k=3)),
    ("apply_with-raises", lambda F: F.apply_with(echo, boom)(1)),
    ("apply_with-arity", lambda F: F.apply_with(echo)),
    # reprs
    ("repr-compose", lambda F: repr(F.compose(str, abs))),
    ("repr-partial", lambda F: repr(F.partial(echo, 1, k="v"))),
    ("repr-and", lambda F: repr(F.and_(bool, callable))),
    ("repr-nth", lambda F: repr(F.nth_arg(2))),
]


def outcome(fn, module):
    try:
        return ("ok", fn(module))
    except Exception as exc:  # the comparison is the point: type and message
        return ("raised", type(exc), str(exc))


@pytest.mark.parametrize("case", [fn for _, fn in CASES], ids=[name for name, _ in CASES])
def test_backends_agree(both, case):
    assert outcome(case, both["python"]) == outcome(case, both["cpp"])


def test_table_covers_errors_and_successes(both):
    kinds = {outcome(fn, both["python"])[0] for _, fn in CASES}
    assert kinds == {"ok", "raised"}
