"""Pure-Python backend of retracesoftware.functional.

Implements exactly the contract of functional/README.md, the same one the C++
extension ``_functional`` implements: the same names, arities, error types and
messages, attributes and reprs. tests/functional/ runs every test against both.

Two habits keep the backends equal where plain Python would differ:

* Every callable here is an *instance* of a class with ``__call__`` (never a
  plain function), so none is a descriptor: stored as a class attribute it is
  not bound to instances, exactly like the C++ builtins and types.
* Arity and keyword checks are written out by hand, so the messages are the
  contract's rather than Python's automatic ``missing 1 required positional
  argument`` ones.
"""
from __future__ import annotations

import sys

__all__ = [
    "identity", "first_arg", "is_none",
    "compose", "sequence", "partial", "constantly", "repeatedly",
    "if_then_else", "dispatch", "memoize_one_arg", "nth_arg",
    "isinstance_of", "not_", "and_", "or_",
    "walker", "side_effect", "handle", "apply_with",
]


# -- error helpers (messages are part of the contract) ----------------------

def _plural(n):
    return "" if n == 1 else "s"


def _ctor_no_kwargs(name, kwargs):
    if kwargs:
        raise TypeError(f"{name}() takes no keyword arguments")


def _ctor_exactly(name, args, n):
    if len(args) != n:
        raise TypeError(f"{name} expected {n} argument{_plural(n)}, got {len(args)}")


def _ctor_at_least(name, args, n):
    if len(args) < n:
        raise TypeError(f"{name} expected at least {n} argument{_plural(n)}, got {len(args)}")


def _check_callable(name, position, obj):
    if not callable(obj):
        raise TypeError(f"{name}() argument {position} must be callable, not {type(obj).__name__}")


def _call_no_kwargs(name):
    return TypeError(f"{name}() takes no keyword arguments")


def _call_exactly_one(name, given):
    return TypeError(f"{name}() takes exactly one argument ({given} given)")


def _call_at_least(name, n, given):
    return TypeError(f"{name}() takes at least {n} positional argument{_plural(n)} ({given} given)")


# -- shared base ------------------------------------------------------------

class _Combinator:
    """Private base: no instance dict, not subclassable, not picklable."""

    __slots__ = ()

    def __init_subclass__(cls, _final=False, **kwargs):
        super().__init_subclass__(**kwargs)
        for base in cls.__mro__[1:]:
            if base.__dict__.get("_final_"):
                raise TypeError(f"type '{base.__name__}' is not an acceptable base type")
        cls._final_ = _final

    def __reduce_ex__(self, protocol):
        raise TypeError(f"cannot pickle '{type(self).__name__}' object")

    def _repr_parts(self):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(self._repr_parts())})"


class _Function(_Combinator):
    """A module-level function that, like a builtin, does not bind as a method."""

    __slots__ = ()

    def __repr__(self):
        return f"<function {type(self).__name__.lstrip('_')}>"


# -- module-level functions -------------------------------------------------

class _identity(_Function, _final=True):
    __name__ = "identity"
    """identity(x, /) -> x"""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise _call_no_kwargs("identity")
        if len(args) != 1:
            raise _call_exactly_one("identity", len(args))
        return args[0]


class _first_arg(_Function, _final=True):
    __name__ = "first_arg"
    """first_arg(*args, **kwargs) -> args[0]; keywords are ignored."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        if not args:
            raise _call_at_least("first_arg", 1, 0)
        return args[0]


class _is_none(_Function, _final=True):
    __name__ = "is_none"
    """is_none(x, /) -> x is None"""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise _call_no_kwargs("is_none")
        if len(args) != 1:
            raise _call_exactly_one("is_none", len(args))
        return args[0] is None


identity = _identity()
first_arg = _first_arg()
is_none = _is_none()


# -- composition -------------------------------------------------------------

class compose(_Combinator, _final=True):
    """compose(f, g, h)(*a, **kw) == f(g(h(*a, **kw)))"""

    __slots__ = ("_functions", "_last", "_rest")

    def __init__(self, *functions, **kwargs):
        _ctor_no_kwargs("compose", kwargs)
        _ctor_at_least("compose", functions, 1)
        for i, f in enumerate(functions):
            _check_callable("compose", i + 1, f)
        self._functions = functions
        self._last = functions[-1]
        self._rest = functions[-2::-1]  # applied after the last, right to left

    @property
    def functions(self):
        return self._functions

    def __call__(self, *args, **kwargs):
        r = self._last(*args, **kwargs)
        for f in self._rest:
            r = f(r)
        return r

    def _repr_parts(self):
        return [repr(f) for f in self._functions]


class sequence(_Combinator, _final=True):
    """sequence(f, g, h)(*a, **kw) == h(g(f(*a, **kw)))"""

    __slots__ = ("_functions", "_first", "_rest")

    def __init__(self, *functions, **kwargs):
        _ctor_no_kwargs("sequence", kwargs)
        _ctor_at_least("sequence", functions, 1)
        for i, f in enumerate(functions):
            _check_callable("sequence", i + 1, f)
        self._functions = functions
        self._first = functions[0]
        self._rest = functions[1:]

    @property
    def functions(self):
        return self._functions

    def __call__(self, *args, **kwargs):
        r = self._first(*args, **kwargs)
        for f in self._rest:
            r = f(r)
        return r

    def _repr_parts(self):
        return [repr(f) for f in self._functions]


class partial(_Combinator, _final=True):
    """partial(func, /, *args, **keywords): bind leading positionals and keywords.

    Call keywords override bound ones, as in functools.partial.
    """

    __slots__ = ("_func", "_args", "_keywords")

    def __init__(self, *args, **keywords):
        _ctor_at_least("partial", args, 1)
        _check_callable("partial", 1, args[0])
        self._func = args[0]
        self._args = args[1:]
        self._keywords = dict(keywords)

    @property
    def func(self):
        return self._func

    @property
    def args(self):
        return self._args

    @property
    def keywords(self):
        return dict(self._keywords)

    def __call__(self, *args, **kwargs):
        if self._keywords:
            kwargs = {**self._keywords, **kwargs}
        return self._func(*self._args, *args, **kwargs)

    def _repr_parts(self):
        parts = [repr(self._func)]
        parts.extend(repr(a) for a in self._args)
        parts.extend(f"{k}={v!r}" for k, v in self._keywords.items())
        return parts


class constantly(_Combinator, _final=True):
    """constantly(value)(*a, **kw) -> value"""

    __slots__ = ("_value",)

    def __init__(self, *args, **kwargs):
        _ctor_no_kwargs("constantly", kwargs)
        _ctor_exactly("constantly", args, 1)
        self._value = args[0]

    @property
    def value(self):
        return self._value

    def __call__(self, *args, **kwargs):
        return self._value

    def _repr_parts(self):
        return [repr(self._value)]


class _OneCallable(_Combinator):
    """Base of combinators built from exactly one callable, exposed as .func."""

    __slots__ = ("_func",)
    _name = ""

    def __init__(self, *args, **kwargs):
        _ctor_no_kwargs(self._name, kwargs)
        _ctor_exactly(self._name, args, 1)
        _check_callable(self._name, 1, args[0])
        self._func = args[0]

    @property
    def func(self):
        return self._func

    def _repr_parts(self):
        return [repr(self._func)]


class repeatedly(_OneCallable, _final=True):
    """repeatedly(func)(*a, **kw) -> func() (the arguments are ignored)"""

    __slots__ = ()
    _name = "repeatedly"

    def __call__(self, *args, **kwargs):
        return self._func()


class side_effect(_OneCallable, _final=True):
    """side_effect(func)(x, *a, **kw): call func(x, *a, **kw) for its effect, return x."""

    __slots__ = ()
    _name = "side_effect"

    def __call__(self, *args, **kwargs):
        if not args:
            raise _call_at_least("side_effect", 1, 0)
        self._func(*args, **kwargs)
        return args[0]


class if_then_else(_Combinator, _final=True):
    """if_then_else(condition, then, otherwise)(*a, **kw)"""

    __slots__ = ("_condition", "_then", "_otherwise")

    def __init__(self, *args, **kwargs):
        _ctor_no_kwargs("if_then_else", kwargs)
        _ctor_exactly("if_then_else", args, 3)
        for i, f in enumerate(args):
            _check_callable("if_then_else", i + 1, f)
        self._condition, self._then, self._otherwise = args

    condition = property(lambda self: self._condition)
    then = property(lambda self: self._then)
    otherwise = property(lambda self: self._otherwise)

    def __call__(self, *args, **kwargs):
        if self._condition(*args, **kwargs):
            return self._then(*args, **kwargs)
        return self._otherwise(*args, **kwargs)

    def _repr_parts(self):
        return [repr(self._condition), repr(self._then), repr(self._otherwise)]


_DISPATCH_CASES = "dispatch() argument 1 must be an iterable of (predicate, function) pairs"


class dispatch(_Combinator, _final=True):
    """dispatch(cases, default): cases is an iterable of (predicate, function).

    The call runs the function of the first case whose predicate is true for
    the same arguments, else default.
    """

    __slots__ = ("_cases", "_default")

    def __init__(self, *args, **kwargs):
        _ctor_no_kwargs("dispatch", kwargs)
        _ctor_exactly("dispatch", args, 2)
        cases, default = args
        if not isinstance(cases, (list, tuple)):
            try:
                iterator = iter(cases)
            except TypeError:
                raise TypeError(_DISPATCH_CASES) from None
            cases = list(iterator)
        for i, case in enumerate(cases):
            if not isinstance(case, tuple) or len(case) != 2:
                raise TypeError(
                    f"dispatch() case {i} must be a (predicate, function) tuple, not {type(case).__name__}")
            for role, fn in zip(("predicate", "function"), case):
                if not callable(fn):
                    raise TypeError(f"dispatch() case {i} {role} must be callable, not {type(fn).__name__}")
        _check_callable("dispatch", 2, default)
        self._cases = tuple((p, f) for p, f in cases)
        self._default = default

    @property
    def cases(self):
        return self._cases

    @property
    def default(self):
        return self._default

    def __call__(self, *args, **kwargs):
        for predicate, function in self._cases:
            if predicate(*args, **kwargs):
                return function(*args, **kwargs)
        return self._default(*args, **kwargs)

    def _repr_parts(self):
        return [repr(self._cases), repr(self._default)]


class memoize_one_arg(_OneCallable, _final=True):
    """memoize_one_arg(func)(x): func(x), cached per hashable x (errors are not cached)."""

    __slots__ = ("_cache",)
    _name = "memoize_one_arg"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cache = {}

    @property
    def cache(self):
        return self._cache

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise _call_no_kwargs("memoize_one_arg")
        if len(args) != 1:
            raise _call_exactly_one("memoize_one_arg", len(args))
        key = args[0]
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        result = cache[key] = self._func(key)
        return result


class nth_arg(_Combinator, _final=True):
    """nth_arg(n)(*args, **kw) -> args[n]; keywords are ignored."""

    __slots__ = ("_n",)

    def __init__(self, *args, **kwargs):
        _ctor_no_kwargs("nth_arg", kwargs)
        _ctor_exactly("nth_arg", args, 1)
        n = args[0]
        if not isinstance(n, int):
            raise TypeError(f"nth_arg() argument 1 must be int, not {type(n).__name__}")
        n = int(n)
        if not -sys.maxsize - 1 <= n <= sys.maxsize:
            raise OverflowError("Python int too large to convert to C ssize_t")
        if n < 0:
            raise ValueError(f"nth_arg() argument 1 must be >= 0, not {n}")
        self._n = n

    @property
    def n(self):
        return self._n

    def __call__(self, *args, **kwargs):
        n = self._n
        if len(args) <= n:
            raise TypeError(
                f"nth_arg({n}) takes at least {n + 1} positional argument{_plural(n + 1)} ({len(args)} given)")
        return args[n]

    def _repr_parts(self):
        return [repr(self._n)]


# -- predicates ---------------------------------------------------------------

class isinstance_of(_Combinator, _final=True):
    """isinstance_of(cls)(x) -> isinstance(x, cls)"""

    __slots__ = ("_cls",)

    def __init__(self, *args, **kwargs):
        _ctor_no_kwargs("isinstance_of", kwargs)
        _ctor_exactly("isinstance_of", args, 1)
        cls = args[0]
        ok = isinstance(cls, type) or (
            isinstance(cls, tuple) and all(isinstance(c, type) for c in cls))
        if not ok:
            raise TypeError(
                f"isinstance_of() argument 1 must be a type or a tuple of types, not {type(cls).__name__}")
        self._cls = cls

    @property
    def cls(self):
        return self._cls

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise _call_no_kwargs("isinstance_of")
        if len(args) != 1:
            raise _call_exactly_one("isinstance_of", len(args))
        return isinstance(args[0], self._cls)

    def _repr_parts(self):
        return [repr(self._cls)]


class not_(_Combinator, _final=True):
    """not_(predicate)(*a, **kw) -> not predicate(*a, **kw)"""

    __slots__ = ("_predicate",)

    def __init__(self, *args, **kwargs):
        _ctor_no_kwargs("not_", kwargs)
        _ctor_exactly("not_", args, 1)
        _check_callable("not_", 1, args[0])
        self._predicate = args[0]

    @property
    def predicate(self):
        return self._predicate

    def __call__(self, *args, **kwargs):
        return not self._predicate(*args, **kwargs)

    def _repr_parts(self):
        return [repr(self._predicate)]


class _Predicates(_Combinator):
    __slots__ = ("_predicates",)
    _name = ""

    def __init__(self, *predicates, **kwargs):
        _ctor_no_kwargs(self._name, kwargs)
        _ctor_at_least(self._name, predicates, 1)
        for i, p in enumerate(predicates):
            _check_callable(self._name, i + 1, p)
        self._predicates = predicates

    @property
    def predicates(self):
        return self._predicates

    def _repr_parts(self):
        return [repr(p) for p in self._predicates]


class and_(_Predicates, _final=True):
    """and_(*predicates)(*a, **kw) -> True iff every predicate is true (short-circuits)."""

    __slots__ = ()
    _name = "and_"

    def __call__(self, *args, **kwargs):
        for p in self._predicates:
            if not p(*args, **kwargs):
                return False
        return True


class or_(_Predicates, _final=True):
    """or_(*predicates)(*a, **kw) -> True iff some predicate is true (short-circuits)."""

    __slots__ = ()
    _name = "or_"

    def __call__(self, *args, **kwargs):
        for p in self._predicates:
            if p(*args, **kwargs):
                return True
        return False


# -- walker -------------------------------------------------------------------

def _walk(func, obj):
    # Explicit loops rather than comprehensions: one Python frame per level of
    # nesting on every version (3.11 gives comprehensions their own frame).
    t = type(obj)
    if t is list:
        out = []
        append = out.append
        for item in obj:  # live iteration by index, as the C++ backend does
            append(_walk(func, item))
        return out
    if t is tuple:
        out = []
        append = out.append
        for item in obj:
            append(_walk(func, item))
        return tuple(out)
    if t is dict:
        out = {}
        for key, value in list(obj.items()):  # a snapshot, as the C++ backend does
            out[key] = _walk(func, value)
        return out
    return func(obj)


class walker(_OneCallable, _final=True):
    """walker(func)(value): func applied to every leaf of nested tuple/list/dict.

    Only exact tuple, list and dict are containers (subclasses such as
    namedtuples are leaves); dict keys are kept, values are walked.
    """

    __slots__ = ()
    _name = "walker"

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise _call_no_kwargs("walker")
        if len(args) != 1:
            raise _call_exactly_one("walker", len(args))
        return _walk(self._func, args[0])


# -- exceptions and arguments ------------------------------------------------------

def _is_exception_class(obj):
    return isinstance(obj, type) and issubclass(obj, BaseException)


class handle(_Combinator, _final=True):
    """handle(func, exc_types, handler)(*a, **kw): func(*a, **kw), or handler(exc)
    when it raises an instance of exc_types."""

    __slots__ = ("_func", "_exc_types", "_handler")

    def __init__(self, *args, **kwargs):
        _ctor_no_kwargs("handle", kwargs)
        _ctor_exactly("handle", args, 3)
        func, exc_types, handler = args
        _check_callable("handle", 1, func)
        ok = _is_exception_class(exc_types) or (
            isinstance(exc_types, tuple) and all(_is_exception_class(e) for e in exc_types))
        if not ok:
            raise TypeError(
                "handle() argument 2 must be an exception class or a tuple of exception classes, "
                f"not {type(exc_types).__name__}")
        _check_callable("handle", 3, handler)
        self._func, self._exc_types, self._handler = func, exc_types, handler

    func = property(lambda self: self._func)
    exc_types = property(lambda self: self._exc_types)
    handler = property(lambda self: self._handler)

    def __call__(self, *args, **kwargs):
        try:
            return self._func(*args, **kwargs)
        except self._exc_types as exc:
            return self._handler(exc)

    def _repr_parts(self):
        return [repr(self._func), repr(self._exc_types), repr(self._handler)]


class apply_with(_Combinator, _final=True):
    """apply_with(func, transform)(*a, **kw) ==
    func(*map(transform, a), **{k: transform(v) for k, v in kw.items()})"""

    __slots__ = ("_func", "_transform")

    def __init__(self, *args, **kwargs):
        _ctor_no_kwargs("apply_with", kwargs)
        _ctor_exactly("apply_with", args, 2)
        for i, f in enumerate(args):
            _check_callable("apply_with", i + 1, f)
        self._func, self._transform = args

    func = property(lambda self: self._func)
    transform = property(lambda self: self._transform)

    def __call__(self, *args, **kwargs):
        t = self._transform
        args = [t(a) for a in args]
        if kwargs:
            kwargs = {k: t(v) for k, v in kwargs.items()}
        return self._func(*args, **kwargs)

    def _repr_parts(self):
        return [repr(self._func), repr(self._transform)]
