"""StreamReader.scan(tag, nvalues) on both backends: the same list as reading
the tape event by event (the reference loop below, what the replay's signal
index did before), on tapes with thread switches, bindings and their
deletes, strings defined inside nested values before the tag's first use,
hooks and exceptions (passed over without running anything), and a
damaged tail (the scan ends there with what it found)."""
import os
import threading

import pytest


class Money:
    def __init__(self, cents):
        self.cents = cents


def reference(impl, path, tag, nvalues):
    """What scan() must return, read through the ordinary API."""
    r = impl.StreamReader(path)
    r.register("money", lambda state: Money(state))
    out, last, previous = [], {}, None
    try:
        while True:
            kind = r.next_kind
            index = r.events
            if previous is not None:
                last[previous[0]] = index
            if kind is None:
                break
            tid = r.thread
            previous = (tid,)
            if kind == "binding":
                r.bind(object())
                continue
            v = r.read()
            if type(v) is str and v == tag:
                values = []
                while len(values) < nvalues and r.next_kind == "value":
                    values.append(r.read())
                out.append((index, tid, last.get(tid), values))
    except Exception:
        pass
    return out


def write_tape(impl, path, *, damage=False):
    ids = {threading.get_ident(): 0}
    w = impl.StreamWriter(path, {}, thread_id=lambda: ids[threading.get_ident()], compress=False)
    w.register(Money, "money", lambda m: m.cents)
    me = threading.get_ident()
    # strings (4..64 chars: the table) defined deep inside values first
    w.write("CALL", "pkg.func", ("nested-name", {"key-one": ["inner-str", frozenset({"frozen-s"})]}), Money(5))
    w.write("RESULT", ValueError("boom-message"), {"set-member"})
    obj = Money(1)
    w.bind(obj)
    w.write("SIGNAL", 14, ("app.py", "work", 3, 0))          # the tag's first use: a definition
    for step in range(3):
        ids[me] = 1 + step % 2                              # other threads' events (switches)
        w.write("CALL", "time.time", step, "RESULT", 1.5 * step)
        ids[me] = 0
        w.write("CALL", "os.getpid", step)
        if step == 1:
            w.unbind(obj)                                   # a BINDING_DELETE
        ids[me] = 2
        w.write("RESULT", 7)
        ids[me] = 0
        w.write("SIGNAL", 2 + step, ("app.py", "loop", 10 + step, step))  # references
    w.write("SIGNAL", 15)                                   # fewer values than asked
    w.bind(Money(2))
    w.write("SIGNAL")
    w.write("not-a-tag", "SIGNAL-ish", "SIGNAL")             # a tag as a later value counts too
    w.close()
    if damage:
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size - 3)


@pytest.mark.parametrize("nvalues", [0, 1, 2, 5])
def test_scan_lists_what_reading_finds(impl, tmp_path, nvalues):
    p = tmp_path / "t.bin"
    write_tape(impl, p)
    want = reference(impl, p, "SIGNAL", nvalues)
    assert len(want) == (7 if nvalues <= 2 else 5)     # values right after a tag are its values
    r = impl.StreamReader(p)
    got = r.scan("SIGNAL", nvalues)
    assert [tuple(x) for x in got] == [tuple(x) for x in want]
    assert got[1][2] is not None and got[1][2] < got[1][0]  # after other threads' events


def test_both_backends_scan_alike(both, tmp_path):
    py, cpp = both
    p = tmp_path / "t.bin"
    write_tape(py, p)
    assert py.StreamReader(p).scan("SIGNAL", 2) == cpp.StreamReader(p).scan("SIGNAL", 2)
    assert py.StreamReader(p).scan("no such tag", 2) == cpp.StreamReader(p).scan("no such tag", 2) == []


def test_scan_needs_no_hook_and_stops_at_damage(impl, tmp_path):
    p = tmp_path / "t.bin"
    write_tape(impl, p)
    whole = impl.StreamReader(p).scan("SIGNAL", 2)       # no hook registered: passed over
    assert len(whole) == 7
    write_tape(impl, p, damage=True)
    cut = impl.StreamReader(p).scan("SIGNAL", 2)
    assert cut == whole[:len(cut)] and len(cut) < len(whole)


def test_scan_is_for_a_fresh_reader(impl, tmp_path):
    p = tmp_path / "t.bin"
    write_tape(impl, p)
    r = impl.StreamReader(p)
    r.read()
    with pytest.raises(ValueError):
        r.scan("SIGNAL", 2)
    with pytest.raises(TypeError):
        impl.StreamReader(p).scan(b"SIGNAL", 2)


@pytest.mark.parametrize("compress", [False, True])
def test_a_tape_without_the_tag_scans_to_nothing(impl, tmp_path, compress):
    # The C++ reader first looks for the tag's bytes in the frames and
    # parses nothing when no frame has them; a tape where they occur only
    # inside other values is parsed, and still has no such event.
    ids = {threading.get_ident(): 0}
    for name, almost in (("none.bin", "ALARM"), ("inside.bin", "SIGNAL-ish")):
        p = tmp_path / name
        w = impl.StreamWriter(p, {}, thread_id=lambda: ids[threading.get_ident()], compress=compress)
        for step in range(200):
            ids[threading.get_ident()] = step % 3
            w.write("SYNC", step, "CALL", "time.time", almost, ("SIGNAL" + "x" * (step % 2),))
        w.close()
        assert impl.StreamReader(p).scan("SIGNAL", 2) == reference(impl, p, "SIGNAL", 2) == []
        assert len(impl.StreamReader(p).scan("SYNC", 1)) == 200
