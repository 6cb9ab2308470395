"""StreamWriter.reopen / StreamReader.reopen: a forked child continues the
parent's writer object on its own file, keeping the live bindings; a reader
continues from the parent's recording into the child's with the same objects."""
import gc
import os

import pytest

from retracesoftware.utils.errors import RecordingError, RecordingFormatError

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),  # PYVERSIONS 3.12+
]


class Obj:
    pass


def _record(impl, tmp_path, name="p"):
    """Parent binds a, b, c, unbinds b, forks; the child reopens and writes
    handles to a and c. Returns (parent path, child path)."""
    p = tmp_path / f"{name}.bin"
    cp = tmp_path / f"{name}.child.bin"
    tid = [7]
    w = impl.StreamWriter(p, {"who": "parent"}, thread_id=lambda: tid[0])
    a, b, c = Obj(), Obj(), Obj()
    w.bind(a)
    w.bind(b)
    w.bind(c)
    w.write("interned-string", a)
    w.unbind(b)
    w.write("fork")
    r_fd, w_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r_fd)
            tid[0] = 0
            k = w.reopen(str(cp), {"who": "child"})
            w.write("interned-string", c, a)
            d = Obj()
            w.bind(d)
            w.write(d)
            w.close()
            code = 0 if k == 2 else 2
        finally:
            os.write(w_fd, bytes([code]))
            os._exit(code)
    os.close(w_fd)
    status = os.read(r_fd, 1)
    os.close(r_fd)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    w.write("parent after", c)
    w.close()
    return p, cp, (a, b, c)


def test_child_continues_writer_and_reader_follows(impl, tmp_path):
    p, cp, _ = _record(impl, tmp_path)
    r = impl.StreamReader(p)
    a, b, c = Obj(), Obj(), Obj()
    r.bind(a)
    r.bind(b)
    r.bind(c)
    assert r.read() == "interned-string" and r.read() is a
    assert r.read() == "fork"
    # the parent's own tape goes on without the child's events
    assert r.reopen(str(cp)) == 2
    assert r.preamble == {"who": "child"}
    assert r.read() == "interned-string"
    assert r.thread == 0
    assert r.read() is c and r.read() is a
    d = Obj()
    r.bind(d)
    assert r.read() is d
    with pytest.raises(EOFError):
        r.read()
    r.close()
    pr = impl.StreamReader(p)
    for o in (a, b, c):
        pr.bind(o)
    assert [pr.read() for _ in range(5)] == ["interned-string", a, "fork", "parent after", c]


def test_child_file_stands_alone(impl, tmp_path):
    """A fresh reader can walk the child's file (inspect does)."""
    _, cp, _ = _record(impl, tmp_path)
    r = impl.StreamReader(cp)
    kinds = []
    while r.next_kind is not None:
        if r.next_kind == "binding":
            r.bind(Obj())
            kinds.append("B")
        else:
            r.read()
            kinds.append("v")
    assert kinds == ["B", "B", "v", "v", "v", "B", "v"]


def test_backends_write_identical_child_files(both, tmp_path):
    py, cpp = both
    _, c1, _ = _record(py, tmp_path, "py")
    _, c2, _ = _record(cpp, tmp_path, "cpp")
    assert c1.read_bytes() == c2.read_bytes()


def test_reopen_refused_in_owner_process(impl, tmp_path):
    w = impl.StreamWriter(tmp_path / "x.bin", {})
    with pytest.raises(RecordingError):
        w.reopen(str(tmp_path / "y.bin"), {})
    w.write("still fine")
    w.close()
    assert not (tmp_path / "y.bin").exists()


def test_reader_reopen_on_a_recording_without_the_bindings(impl, tmp_path):
    w = impl.StreamWriter(tmp_path / "x.bin", {})
    w.bind(Obj())
    w.close()
    other = impl.StreamWriter(tmp_path / "y.bin", {})
    other.write("no bindings")
    other.close()
    r = impl.StreamReader(tmp_path / "x.bin")
    r.bind(Obj())
    with pytest.raises(RecordingFormatError, match="inherited"):
        r.reopen(str(tmp_path / "y.bin"))


def test_refcounts_after_reopen(impl, tmp_path):
    import sys
    p, cp, _ = _record(impl, tmp_path, "rc")
    r = impl.StreamReader(p)
    objs = [Obj(), Obj(), Obj()]
    for o in objs:
        r.bind(o)
    assert [r.read() for _ in range(3)] == ["interned-string", objs[0], "fork"]
    before = [sys.getrefcount(o) for o in objs]
    r.reopen(str(cp))   # a and c stay bound (now indices 0, 1), b was deleted
    assert [sys.getrefcount(o) for o in objs] == before
    assert r.read() == "interned-string" and r.read() is objs[2]
    r.close()
    del r
    gc.collect()  # the Python reader's unpacker refers back to it
    assert [sys.getrefcount(o) for o in objs] == [n - 1 for n in before[:1]] + [before[1]] + [before[2] - 1]
