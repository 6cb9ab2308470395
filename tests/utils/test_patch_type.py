import _io
import _random
import _socket
import datetime
import gc
import subprocess
import sys
import textwrap

import pytest

STATIC_TYPES = [_socket.socket, _random.Random, _io.FileIO, datetime.datetime, int]


def snapshot(cls):
    return list(cls.__dict__.items())


@pytest.mark.parametrize("cls", STATIC_TYPES, ids=lambda c: c.__name__)
def test_round_trip_leaves_dict_identical(u, cls):
    before = snapshot(cls)
    existing = next(iter(k for k, v in cls.__dict__.items() if not k.startswith("__") and callable(v)))
    token = u.patch_type(cls, {existing: lambda *a: "patched", "retrace_new_attr": 42})
    assert cls.__dict__[existing]() == "patched"
    assert cls.retrace_new_attr == 42
    u.unpatch_type(token)
    assert snapshot(cls) == before
    assert "retrace_new_attr" not in cls.__dict__
    gc.collect()


def test_existing_instances_and_subclasses_see_patch(u):
    r = _random.Random(1)

    class Sub(_random.Random):
        pass

    s = Sub(2)
    token = u.patch_type(_random.Random, {"random": lambda self: 0.25})
    try:
        assert r.random() == 0.25
        assert s.random() == 0.25
        assert Sub(3).random() == 0.25
    finally:
        u.unpatch_type(token)
    assert r.random() != 0.25 or r.random() != 0.25


def test_patch_with_gateway_method(u):
    g = u.Gate()
    orig = datetime.datetime.__dict__["isoformat"]
    gw = u.RecordGateway(g, orig, None, lambda r: "REC:" + r, None)
    token = u.patch_type(datetime.datetime, {"isoformat": gw})
    try:
        d = datetime.datetime(2020, 1, 2)
        g.phase = u.INTERNAL
        assert d.isoformat() == "REC:2020-01-02T00:00:00"
        g.phase = u.DISABLED
        assert d.isoformat() == "2020-01-02T00:00:00"
    finally:
        u.unpatch_type(token)
    assert datetime.datetime.__dict__["isoformat"] is orig


def test_dunder_on_heap_type_updates_slot(u):
    class K:
        pass

    token = u.patch_type(K, {"__len__": lambda self: 7})
    assert len(K()) == 7
    u.unpatch_type(token)
    with pytest.raises(TypeError):
        len(K())
    assert "__len__" not in K.__dict__


def test_unpatch_twice_rejected(u):
    token = u.patch_type(_io.FileIO, {"retrace_x": 1})
    u.unpatch_type(token)
    assert not token.active
    with pytest.raises(ValueError):
        u.unpatch_type(token)


def test_bad_arguments(u):
    with pytest.raises(TypeError):
        u.patch_type(object(), {})
    with pytest.raises(TypeError):
        u.patch_type(int, [("a", 1)])
    before = snapshot(_io.FileIO)
    with pytest.raises(TypeError):
        u.patch_type(_io.FileIO, {"retrace_ok": 1, 5: 2})
    assert snapshot(_io.FileIO) == before  # partial patch rolled back


def test_token_names_and_cls(u):
    token = u.patch_type(_io.FileIO, {"retrace_a": 1, "retrace_b": 2})
    assert token.cls is _io.FileIO and token.names == ("retrace_a", "retrace_b")
    u.unpatch_type(token)


def test_refcounts(u):
    value = object()
    before = sys.getrefcount(value)
    token = u.patch_type(_io.FileIO, {"retrace_v": value})
    u.unpatch_type(token)
    del token
    gc.collect()
    assert sys.getrefcount(value) == before
    with pytest.raises(TypeError):
        u.patch_type(_io.FileIO, {"retrace_v": value, 3: value})
    gc.collect()
    assert sys.getrefcount(value) == before


@pytest.mark.parametrize("mod, name", [("_socket", "socket"), ("_io", "FileIO"), ("datetime", "datetime")])
def test_patch_in_fresh_process(u, mod, name):
    # Fresh interpreter: some static types are not readied until first use.
    code = (f"import {mod}, {u.__name__} as u; t = u.patch_type({mod}.{name}, {{'retrace_m': 1}}); "
            f"assert {mod}.{name}.retrace_m == 1; u.unpatch_type(t); "
            f"assert not hasattr({mod}.{name}, 'retrace_m'); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_no_crash_at_shutdown_with_patches_live(u):
    code = textwrap.dedent(f"""
        import gc, _socket, _io, datetime, _random
        import {u.__name__} as u
        tokens = [u.patch_type(t, {{"retrace_m": lambda self: 1}}) for t in (_socket.socket, _io.FileIO, datetime.datetime, _random.Random)]
        g = u.Gate(); g.phase = u.INTERNAL
        gw = u.RecordGateway(g, _random.Random.random, None, None, None)
        tokens.append(u.patch_type(_random.Random, {{"random": gw}}))
        r = _random.Random(5); r.random()
        gc.collect()
        u.unpatch_type(tokens[0])
        gc.collect()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
