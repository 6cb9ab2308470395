"""StreamReader.async_tags / async_marks / async_next (docs/SIGNALS.md): the
replay's engine names asynchronous events by their tag and announces a
thread's later one by an event index; both backends answer the same."""
import pytest


def _tape(impl, path):
    tid = [0]
    w = impl.StreamWriter(path, {}, thread_id=lambda: tid[0])
    w.write("CALL", "f", 1, "RESULT", 2)       # thread 0: events 0-4
    tid[0] = 1
    w.write("CALL", "g", 1, "RESULT", 3)       # thread 1: events 5-9
    tid[0] = 0
    w.write("SIGNAL", 14, ("p",))              # thread 0: events 10-12
    w.close()


def _async_next_at_each_event(reader):
    seen = []
    while reader.next_kind is not None:
        seen.append((reader.events, reader.async_next))
        reader.read()
    return seen


def test_async_next_is_a_tag_at_the_head_or_a_mark(impl, tmp_path):
    path = tmp_path / "t.bin"
    _tape(impl, path)
    r = impl.StreamReader(path)
    items = []
    while r.next_kind is not None:
        items.append((r.events, r.thread, r.read()))
    r.close()
    mark = next(index for index, tid, _ in items if tid == 1)     # just after thread 0's RESULT 2
    signal = next(index for index, _, value in items if value == "SIGNAL")
    r = impl.StreamReader(path)
    assert r.async_marks is None and not r.async_next
    r.async_tags = ("SIGNAL",)
    r.async_marks = frozenset({mark})
    got = _async_next_at_each_event(r)
    assert [i for i, flag in got if flag] == [mark, signal]
    r.close()


def test_async_marks_must_be_a_frozenset_in_cpp_and_clear_to_none(impl, tmp_path):
    path = tmp_path / "t.bin"
    _tape(impl, path)
    r = impl.StreamReader(path)
    assert r.next_kind == "value"
    r.async_marks = frozenset({r.events})
    assert r.async_next
    r.async_marks = None
    assert not r.async_next
    if impl.__name__.endswith("._stream"):     # the C++ backend checks the type
        with pytest.raises(TypeError):
            r.async_marks = {0}
    r.close()
