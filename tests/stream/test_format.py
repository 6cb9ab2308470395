"""Round trips, byte identity between backends, and the stock-msgpack walk."""
import gc
import os
import struct
import sys
import threading
import zlib

import msgpack
import pytest

from retracesoftware.stream import _common as C
from retracesoftware.utils.errors import RecordingError


def record(impl, path, values, **kw):
    w = impl.StreamWriter(path, {"argv": ["prog", "a"], "v": (1, 2)}, **kw)
    for v in values:
        w.write(v)
    w.close()
    return w


def read_all(impl, path):
    r = impl.StreamReader(path)
    out = []
    while True:
        try:
            out.append(r.read())
        except EOFError:
            return r, out


def test_round_trip_value_table(impl, tmp_path, values, deep_equal):
    p = tmp_path / "r.bin"
    record(impl, p, values)
    r, got = read_all(impl, p)
    assert r.preamble == {"argv": ["prog", "a"], "v": (1, 2)}
    assert len(got) == len(values)
    for want, have in zip(values, got):
        assert deep_equal(want, have), (want, have)


def test_backends_write_identical_bytes(both, tmp_path, values):
    py, cpp = both
    outs = []
    for impl in (py, cpp):
        p = tmp_path / f"{impl.__name__}.bin"
        tid = iter([1, 1, 2, 2, 1, "t3", "t3"] * 1000)
        # Frame boundaries follow the clock; fix them with explicit flushes.
        w = impl.StreamWriter(p, {"k": ["v", 1, None]}, thread_id=lambda: next(tid),
                              flush_interval=3600, buffer_size=1 << 30)
        obj, other = object(), [1]
        w.write(*values[:10])
        w.flush()
        w.bind(obj)
        w.write(obj, [obj, {"x": obj}])
        w.bind(other)
        w.write(other)
        w.unbind(obj)
        w.write(*values[10:])
        for i in range(300):  # intern indices past 255
            w.write(f"string-{i}", f"string-{i}")
        w.close()
        outs.append(p.read_bytes())
    assert outs[0] == outs[1]


def test_intern_string_encoding(impl, tmp_path):
    p = tmp_path / "i.bin"
    record(impl, p, ["abc", "abcd", "abcd", "a" * 64, "a" * 65, "a" * 64], compress=False)
    payload = p.read_bytes()
    hdr_len = len(C.HEADER)
    plen = struct.unpack_from("<I", payload, hdr_len)[0]
    first = hdr_len + 8 + plen
    events = list(msgpack.Unpacker(__import__("io").BytesIO(payload[first + 8:]), strict_map_key=False))
    assert events[0] == "abc"  # 3 code points: not interned
    assert events[1] == msgpack.ExtType(C.EXT_STR_DEF, b"abcd")
    assert events[2] == msgpack.ExtType(C.EXT_STR_REF, b"\x00")
    assert events[3] == msgpack.ExtType(C.EXT_STR_DEF, b"a" * 64)
    assert events[4] == "a" * 65
    assert events[5] == msgpack.ExtType(C.EXT_STR_REF, b"\x01")


def _zstd_decompress(payload):
    """What an outside tool does with a compressed frame (docs/FORMAT.md):
    any zstd decoder; here the zstandard package when installed, else the
    system libzstd through ctypes."""
    try:
        import zstandard
    except ImportError:
        from retracesoftware.stream import _zstd
        return _zstd.decompress(payload)
    return zstandard.ZstdDecompressor().decompress(payload)


@pytest.mark.parametrize("compress", [True, False])
def test_stock_msgpack_walks_every_frame(impl, tmp_path, values, compress):
    """No code of ours (but a zstd decoder): struct + zlib + msgpack read
    every frame and event."""
    p = tmp_path / "s.bin"
    w = impl.StreamWriter(p, {"argv": ["x"]}, thread_id=lambda: threading.get_ident() % 7,
                          buffer_size=4096, compress=compress)
    o = object()
    w.bind(o)
    for i, v in enumerate(values):
        w.write(v, o)
        if i % 20 == 0:
            w.flush()
    w.unbind(o)
    w.close()
    data = p.read_bytes()
    assert data[:8] == b"\x89RTRC\r\n\x1a" and struct.unpack_from("<I", data, 8)[0] == 2
    pos, frames, events, compressed = 12, 0, 0, 0
    while pos < len(data):
        length, crc = struct.unpack_from("<II", data, pos)
        zipped = frames > 0 and length & 0x80000000
        length &= 0x7FFFFFFF
        payload = data[pos + 8:pos + 8 + length]
        assert len(payload) == length and zlib.crc32(payload) == crc
        if zipped:
            payload = _zstd_decompress(payload)
            compressed += 1
        u = msgpack.Unpacker(strict_map_key=False, raw=True, max_buffer_size=len(payload) + 1)
        u.feed(payload)
        n = sum(1 for _ in u)
        assert u.tell() == len(payload)
        if frames == 0:
            assert n == 1
        else:
            events += n
        frames += 1
        pos += 8 + length
    assert frames > 2
    assert events == w.events == 1 + 1 + 2 * len(values) + 1
    assert (compressed > 0) == (compress and w.compress)


def test_threads_and_bindings(impl, tmp_path):
    p = tmp_path / "t.bin"
    current = [1]
    w = impl.StreamWriter(p, {}, thread_id=lambda: current[0])
    a, b = object(), object()
    w.write("x")
    w.bind(a)
    current[0] = 2
    w.write(a, [a, a])
    w.bind(b)
    current[0] = 1
    w.write((b, a))
    w.unbind(a)
    assert not w.is_bound(a) and w.is_bound(b)
    w.write(None)
    w.close()
    # switch 1, "x", NEW_BINDING, switch 2, a, [a, a], NEW_BINDING, switch 1, (b, a), DELETE, None
    assert w.events == 11
    r = impl.StreamReader(p)
    ra, rb = object(), object()
    assert r.thread == 1 and r.read() == "x"
    assert r.next_kind == "binding"
    with pytest.raises(ValueError):
        r.read()  # not consumed:
    assert r.next_kind == "binding"
    r.bind(ra)
    assert r.thread == 2
    assert r.read() is ra
    with pytest.raises(ValueError):
        r.bind(rb)  # head is a value
    lst = r.read()
    assert lst[0] is ra and lst[1] is ra
    r.bind(rb)
    assert r.thread == 1
    t = r.read()
    assert t[0] is rb and t[1] is ra
    assert r.read() is None
    assert r.next_kind is None
    assert r.events == 11
    with pytest.raises(EOFError):
        r.read()


def test_bind_errors(impl, tmp_path):
    w = impl.StreamWriter(tmp_path / "b.bin", {})
    for v in (None, 1, 1.0, "s", b"b", True):
        with pytest.raises(TypeError):
            w.bind(v)
    o = object()
    w.bind(o)
    with pytest.raises(ValueError):
        w.bind(o)
    with pytest.raises(KeyError):
        w.unbind(object())
    w.close()


def test_unrecordable_names_type_and_path(impl, tmp_path):
    class Foo:
        pass
    p = tmp_path / "u.bin"
    w = impl.StreamWriter(p, {})
    w.write("before-value")
    with pytest.raises(TypeError, match=r"cannot record value of type .*Foo at \[2\]\['k'\]"):
        w.write(1, "interned-in-failed-call", [0, 1, {"k": Foo()}])
    with pytest.raises(TypeError, match=r"type .*Foo$|type .*Foo \("):
        w.write(Foo())
    w.write("interned-in-failed-call", "after")
    n = w.events
    w.close()
    r, got = read_all(impl, p)
    assert got == ["before-value", "interned-in-failed-call", "after"]
    assert n == 3


def test_hooks(impl, tmp_path):
    class Money:
        def __init__(self, cents):
            self.cents = cents
    p = tmp_path / "h.bin"
    w = impl.StreamWriter(p, {})
    w.register(Money, "money", lambda m: {"c": m.cents})
    w.write(Money(5), [Money(7)])
    w.close()
    r = impl.StreamReader(p)
    with pytest.raises(LookupError, match="money"):
        r.read()
    r = impl.StreamReader(p)
    r.register("money", lambda s: ("M", s["c"]))
    assert r.read() == ("M", 5)
    assert r.read() == [("M", 7)]


def test_unknown_exception_standin(impl, tmp_path):
    mod = type(sys)("retrace_tmp_mod")
    exec("class Boom(Exception):\n    pass\n", mod.__dict__)
    sys.modules["retrace_tmp_mod"] = mod
    try:
        p = tmp_path / "e.bin"
        record(impl, p, [mod.Boom("x", 2)])
        r, got = read_all(impl, p)
        assert type(got[0]) is mod.Boom and got[0].args == ("x", 2)
        del sys.modules["retrace_tmp_mod"]
        r, got = read_all(impl, p)
        from retracesoftware.utils.errors import RetraceError
        assert isinstance(got[0], RetraceError)
        assert type(got[0]).__name__ == "Boom" and got[0].args == ("x", 2)
        assert got[0].recorded_type == "retrace_tmp_mod.Boom"
    finally:
        sys.modules.pop("retrace_tmp_mod", None)


def test_file_mode_and_position(impl, tmp_path):
    p = tmp_path / "m.bin"
    record(impl, p, [1, "two", 3.0])
    assert os.stat(p).st_mode & 0o777 == 0o600
    r = impl.StreamReader(p)
    assert r.position.event == 0
    r.read()
    pos = r.position
    assert pos.frame == 1 and pos.event == 1
    data = p.read_bytes()
    assert data[pos.offset:pos.offset + 1] == b"\xa3"  # fixstr "two"


def test_time_bounded_flush(impl, tmp_path):
    """The background thread writes a frame without flush() or close()."""
    p = tmp_path / "f.bin"
    w = impl.StreamWriter(p, {}, flush_interval=0.01)
    size0 = p.stat().st_size
    w.write("x" * 10)
    done = threading.Event()
    for _ in range(2000):  # waits on the file, not on a clock
        if p.stat().st_size > size0:
            done.set()
            break
        done.wait(0.005)
    w.close()
    assert done.is_set()


def test_concurrent_writers_threads(impl, tmp_path):
    p = tmp_path / "c.bin"
    w = impl.StreamWriter(p, {}, thread_id=threading.get_ident, buffer_size=512)

    def work(k):
        for i in range(500):
            w.write((k, i))
    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    w.close()
    r = impl.StreamReader(p)
    seen = {k: [] for k in range(4)}
    idents = {}
    while r.next_kind:
        tid = r.thread
        k, i = r.read()
        idents.setdefault(k, tid)
        assert idents[k] == tid
        seen[k].append(i)
    assert all(seen[k] == list(range(500)) for k in range(4))


def test_writers_hooks_flushes_and_the_flusher_at_once(impl, tmp_path):
    """The writer's buffer lock under load: four threads write, some values
    through a hook that gives the GIL up in the middle of the write (another
    thread then finds the lock held), a fifth thread calls flush(), and the
    flusher swaps 256-byte buffers every millisecond. Every event is read
    back, in each thread's order, whole."""
    import time

    class Slow:
        def __init__(self, n):
            self.n = n

    def slow_state(obj):
        time.sleep(0)          # releases the GIL inside the write
        return obj.n

    p = tmp_path / "s.bin"
    w = impl.StreamWriter(p, {}, thread_id=threading.get_ident, buffer_size=256, flush_interval=0.001)
    w.register(Slow, "Slow", slow_state)
    stop = threading.Event()

    def work(k):
        for i in range(1500):
            w.write((k, i, Slow(i) if i % 7 == 0 else i))

    def flush():
        while not stop.is_set():
            w.flush()
            time.sleep(0.0005)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    f = threading.Thread(target=flush)
    f.start()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    stop.set()
    f.join()
    w.close()
    r = impl.StreamReader(p)
    r.register("Slow", lambda state: ("slow", state))
    seen = {k: [] for k in range(4)}
    while r.next_kind:
        k, i, v = r.read()
        assert v == (("slow", i) if i % 7 == 0 else i)
        seen[k].append(i)
    assert all(seen[k] == list(range(1500)) for k in range(4))


def test_refcounts(impl, tmp_path):
    p = tmp_path / "rc.bin"
    w = impl.StreamWriter(p, {})
    obj = ["payload"]
    s = "some interned str"
    class Bad:
        pass
    bad = Bad()
    def counts():
        return [sys.getrefcount(obj), sys.getrefcount(s), sys.getrefcount(bad)]
    before = counts()
    for _ in range(50):
        w.write(obj, s)
        with pytest.raises(TypeError):
            w.write(obj, [bad])
    after = counts()
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1] - before[1] <= 2  # the intern table holds it
    w.bind(obj)
    w.unbind(obj)
    assert sys.getrefcount(obj) == before[0]
    w.close()
    r = impl.StreamReader(p)
    v = r.read()
    b = sys.getrefcount(v)
    r.bind  # attribute access only
    assert sys.getrefcount(v) == b


def test_closed_and_reentrant(impl, tmp_path):
    p = tmp_path / "x.bin"
    w = impl.StreamWriter(p, {})

    class Evil:
        pass
    w.register(Evil, "evil", lambda e: w.write(1))
    with pytest.raises(RuntimeError, match="re-entrant"):
        w.write(Evil())
    w.close()
    w.close()
    with pytest.raises(ValueError):
        w.write(1)
    with pytest.raises(TypeError):
        impl.StreamWriter(tmp_path / "y.bin", [])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # PYVERSIONS 3.12+
def test_fork_child_cannot_write_parents_stream(impl, tmp_path):
    p = tmp_path / "parent.bin"
    cp = tmp_path / "child.bin"
    w = impl.StreamWriter(p, {"who": "parent"})
    w.write("before fork")
    r_fd, w_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r_fd)
            try:
                w.write("child into parent")
            except RecordingError:
                cw = w.child_writer(str(cp), {"who": "child"})
                cw.write("child event")
                cw.close()
                code = 0
        finally:
            os.write(w_fd, bytes([code]))
            os._exit(code)
    os.close(w_fd)
    status = os.read(r_fd, 1)
    os.close(r_fd)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    w.write("after fork")
    w.close()
    _, got = read_all(impl, p)
    assert got == ["before fork", "after fork"]
    r, got = read_all(impl, cp)
    assert r.preamble == {"who": "child"} and got == ["child event"]
    assert w.forked is False


def test_writer_released_without_close(impl, tmp_path):
    p = tmp_path / "gc.bin"
    w = impl.StreamWriter(p, {})
    w.write("kept")
    del w
    gc.collect()
    _, got = read_all(impl, p)
    assert got == ["kept"]


def test_backends_compress_identically_and_smaller(both, tmp_path):
    """Both backends compress each frame with the same library and level:
    the same bytes; and a repetitive tape shrinks (the frames really are
    compressed, and the reader gives back every event)."""
    py, cpp = both
    outs = []
    events = [("CALL", "time.time", 12345, "RESULT", 1700000000.0 + i / 7) for i in range(3000)]
    for impl in (py, cpp):
        p = tmp_path / f"{impl.__name__}.bin"
        w = impl.StreamWriter(p, {"argv": ["x"]}, flush_interval=60)
        for i, ev in enumerate(events):
            w.write(*ev)
            if i % 500 == 499:
                w.flush()
        w.close()
        outs.append(p.read_bytes())
        if not w.compress:
            pytest.skip("libzstd is not available here")
        plain = tmp_path / f"{impl.__name__}-plain.bin"
        record(impl, plain, [v for ev in events for v in ev], compress=False)
        assert os.path.getsize(plain) > 3 * len(outs[-1])
        _, got = read_all(impl, p)
        assert got == [v for ev in events for v in ev]
    assert outs[0] == outs[1]
