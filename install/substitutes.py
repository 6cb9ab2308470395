"""Substitutes that behave like the builtins they replace.

The installer replaces builtins by its own callables: gateways
(``time.time``), Python substitutes (``open``, ``_thread.allocate_lock``,
``os.scandir``) and classes (``_thread.RLock``). A program can use a
builtin in more ways than calling it, and each must still work:

* **as a class attribute**: ``class A: lock_class = threading.Lock`` then
  ``A().lock_class()`` (werkzeug, Flask). A builtin function has no
  ``__get__`` so it does not bind ``self``; a Python function or a gateway
  would. `like_builtin` wraps the substitute in a `staticmethod` subclass:
  callable as it stands (3.10+), and fetched through a class or instance it
  gives back the bare callable.
* **pickled / copied**: a builtin function pickles by its qualified name;
  so does the wrapper (``__reduce__`` returns the name; the module attribute
  it names is the wrapper itself, which pickle checks).
* **as a type**: where the original is a type (3.13's ``threading.Lock``,
  ``_thread.RLock``), the substitute is a class (`like_type`): calling it
  makes what the substitute factory makes, ``isinstance``/``issubclass``
  accept the real type's instances and the recorded ones, and it pickles by
  name.
* its ``__name__``, ``__qualname__``, ``__module__``, ``__doc__`` and
  ``repr`` are the original's.
* **objects it returns**, where they are our own classes (the raw file of
  ``open()``, ``os.scandir``'s entries, ``select.poll()``'s object), pass
  the checks programs make on the real ones: `poses_as` gives such a class
  a ``__class__`` that names the real type, which is what ``isinstance``
  falls back to and what ``functools.singledispatch`` dispatches on
  (aiofiles wraps ``open(…, buffering=0)`` by dispatching on ``io.FileIO``).
  ``type(obj)`` still tells the truth; our runtime asks only that.
"""
from __future__ import annotations

__all__ = ["builtin_function", "like_builtin", "like_type", "poses_as", "substitute_for"]


def poses_as(real: type):
    """A ``__class__`` for a class whose instances stand in for *real*'s
    (see module doc): ``isinstance(obj, real)`` and singledispatch on
    *real* (and its ABCs) accept them."""
    return property(lambda self: real, doc=f"{real.__qualname__}: the type this object stands in for")


class builtin_function(staticmethod):
    """A substitute standing where a builtin function stood (see module doc)."""

    __slots__ = ()

    def __reduce__(self):
        return self.__qualname__

    def __repr__(self):
        return self.__dict__.get("_retrace_repr") or f"<built-in function {self.__name__}>"

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


builtin_function.__name__ = builtin_function.__qualname__ = "builtin_function_or_method"
builtin_function.__module__ = "builtins"


def _binds(value) -> bool:
    return hasattr(type(value), "__get__")


def like_builtin(new, original):
    """*new* made to stand where builtin function *original* stood."""
    if type(new) is builtin_function:
        return new
    wrapper = builtin_function(new)
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        value = getattr(original, attr, None)
        if value is not None:
            try:
                setattr(wrapper, attr, value)
            except (AttributeError, TypeError):  # pragma: no cover - read-only on some versions
                pass
    try:
        wrapper._retrace_repr = repr(original)
    except Exception:  # pragma: no cover - a repr that fails
        pass
    return wrapper


class _TypeSubstitute(type):
    """Metaclass of `like_type` classes."""

    def __call__(cls, *args, **kwargs):
        return cls._retrace_make(*args, **kwargs)

    def __instancecheck__(cls, obj):
        return isinstance(obj, cls._retrace_accepts)

    def __subclasscheck__(cls, sub):
        return issubclass(sub, cls._retrace_accepts)

    def __repr__(cls):
        return repr(cls._retrace_real)


def like_type(make, original: type, also: tuple = (), home=None):
    """A class standing where type *original* stood; calling it is *make*.
    *home* ``(module name, attribute)``: where it stands, which is the name
    pickle saves it under (3.13's ``threading.Lock`` is ``_thread.lock``,
    whose own name still holds the real type)."""
    module, qualname = home or (original.__module__, original.__qualname__)
    namespace = {
        "__module__": module,
        "__qualname__": qualname,
        "__doc__": original.__doc__,
        "_retrace_make": staticmethod(make),
        "_retrace_real": original,
        "_retrace_accepts": (original, *also),
    }
    return _TypeSubstitute(original.__name__, (), namespace)


def substitute_for(original, new, *, also: tuple = (), home=None):
    """What to put where *original* stood so that *new* does its work and a
    program sees something that behaves like *original* (see module doc)."""
    if isinstance(original, type) and not isinstance(new, type):
        return like_type(new, original, also, home)
    if not isinstance(original, type) and not _binds(original) and _binds(new) \
            and not isinstance(new, type):
        return like_builtin(new, original)
    return new
