"""index_namespace, the installer's reference index of one module: both
backends make the same index, entry for entry, over every loaded module
and over a module written to hold every kind of place; a shared list is
copied before it grows."""
import functools
import os
import sys
import types

import pytest

from .conftest import load_backend

SOURCE = '''
import functools, os, time

def with_defaults(a, b=os.getpid, *, c=time.time, d=3):
    return a

def with_closure():
    clock = time.monotonic
    def inner():
        return clock()
    return inner

inner = with_closure()

def _plain(x):
    return x

wrapped = functools.wraps(os.getcwd)(lambda: None)    # a wrapper from elsewhere: module 'posix'
def make_wrapper(fn):
    @functools.wraps(fn)
    def wrapper(*a):
        return fn(*a)
    return wrapper
stat_wrapper = make_wrapper(os.stat)

class Box:
    clock = time.time
    reader = staticmethod(os.read)
    def method(self, fd=os.close):
        return fd
    value = 3
    text = "x"

class Meta(type):
    pass

class WithMeta(metaclass=Meta):
    sleep = time.sleep

alias = time.time
number = 7
MARKER = object()

def with_marker(a=MARKER, *, b=MARKER):
    return a
'''


def _module():
    module = types.ModuleType("refidx_sample")
    module.__dict__["__name__"] = "refidx_sample"
    exec(compile(SOURCE, "refidx_sample.py", "exec"), module.__dict__)
    return module


def _normal(index):
    # entries by identity of owner and value, equality of kind and key
    return {k: [(kind, id(owner), key, id(value)) for kind, owner, key, value in v] for k, v in index.items()}


def _skip():
    from retracesoftware.install.installer import _UNINDEXED
    return _UNINDEXED


@pytest.mark.parametrize("skip", ["unindexed", "nothing"])
def test_both_backends_index_every_loaded_module_alike(skip):
    py, cpp = load_backend("python"), load_backend("cpp")
    skip_types = _skip() if skip == "unindexed" else frozenset()
    a, b = {}, {}
    # (no collection meanwhile: a gc callback may rebind a module's float,
    # hypothesis's _gc_cumulative_time, between the two walks)
    import gc
    was = gc.isenabled()
    gc.disable()
    try:
        _walk_both(py, cpp, skip_types, a, b)
    finally:
        if was:
            gc.enable()
    assert len(a) > 1000
    assert _normal(a) == _normal(b)


def _walk_both(py, cpp, skip_types, a, b):
    for name, module in list(sys.modules.items()):
        d = getattr(module, "__dict__", None)
        if type(d) is not dict or name.startswith("retracesoftware"):
            continue
        py.index_namespace(a, None, skip_types, module, name, d)
        cpp.index_namespace(b, None, skip_types, module, name, d)


def test_every_kind_of_place(u):
    import time
    module = _module()
    index = {}
    u.index_namespace(index, None, _skip(), module, "refidx_sample", module.__dict__)
    ns = module.__dict__

    def places(value):
        return {(kind, key) for kind, owner, key, v in index.get(id(value), []) if v is value}
    assert (0, "alias") in places(time.time)                       # a global
    assert (1, "clock") in places(time.time)                       # a class attribute
    assert (3, "c") in places(time.time)                           # a keyword default
    assert (2, 0) in places(os.getpid)                             # a default, by position
    assert (2, 0) in places(os.close)                              # a method's default
    assert (4, None) in places(time.monotonic)                     # a builtin in a closure cell
    assert (4, None) in places(os.stat)                            # in a functools.wraps wrapper
    assert (5, "reader") in places(os.read)                        # a staticmethod's function
    assert (1, "sleep") in places(time.sleep)                      # a class with a metaclass
    assert id(ns["number"]) not in index and id(ns["Box"].text) not in index   # skipped types
    assert all(v is not ns["Box"].value for entries in index.values() for *_, v in entries)


def test_a_shared_list_is_copied_before_it_grows(u):
    import time
    module = _module()
    cached = [(0, "elsewhere", "x", time.time)]
    index = {id(time.time): cached}
    shared = {id(time.time): cached}
    u.index_namespace(index, shared, _skip(), module, "refidx_sample", module.__dict__)
    assert cached == [(0, "elsewhere", "x", time.time)]          # the cache's list is untouched
    assert index[id(time.time)] is not cached and index[id(time.time)][0] == cached[0]
    assert len(index[id(time.time)]) > 1


def test_refcounts(u):
    module = _module()
    skip = _skip()       # (imports the installer, whose modules keep refs of their own: before counting)
    marker = module.MARKER     # referenced by this module only (os.getpid may be in use by another thread)
    before = sys.getrefcount(module), sys.getrefcount(marker)
    for _ in range(20):
        index = {}
        u.index_namespace(index, None, skip, module, "refidx_sample", module.__dict__)
        assert len(index[id(marker)]) == 3      # a global, a default, a keyword default
        del index
    assert (sys.getrefcount(module), sys.getrefcount(marker)) == before


def test_bad_arguments(u):
    with pytest.raises(TypeError):
        u.index_namespace({}, None, frozenset(), types, "types", "not a dict")
