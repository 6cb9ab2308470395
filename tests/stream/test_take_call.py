"""StreamReader.take_call (the replay's fast path for one recorded call) on
both backends: it consumes the five values only when the thread, call tag,
name, fingerprint and result/error tag all match, compares integers of every
width and sign (the fingerprint) and strings interned or not, and otherwise
consumes nothing, so the ordinary reads see the events unchanged."""
import threading

import pytest

# Every msgpack integer width and sign, and past 64 bits.
INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**100,
        -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63, -2**63 - 1, -2**71]

TAGS = ("CALL", "time.time", "RESULT", "ERROR")


def _tape(impl, path, *calls):
    ids = {threading.get_ident(): 0}
    w = impl.StreamWriter(path, {}, thread_id=lambda: ids[threading.get_ident()], compress=False)
    for name, fp, tag, value in calls:
        w.write("CALL", name, fp, tag, value)
    w.write("END")
    w.close()
    return impl.StreamReader(path)


def _take(r, name, fp, thread=0):
    return r.take_call(thread, "CALL", name, fp, "RESULT", "ERROR")


@pytest.mark.parametrize("fp", INTS)
def test_a_fingerprint_of_any_width_matches_itself_only(impl, tmp_path, fp):
    r = _tape(impl, tmp_path / "t.bin", ("time.time", fp, "RESULT", 1.5), ("time.time", fp, "RESULT", 2.5))
    wrongs = [fp + 1, fp - 1, -fp if fp else 1, str(fp)] + ([fp + 0.5] if abs(fp) < 2**52 else [])
    for wrong in wrongs:
        assert _take(r, "time.time", wrong) is None
    assert _take(r, "time.time", fp) == (True, 1.5, True)
    assert _take(r, "time.time", fp) == (True, 2.5, True)
    assert r.read() == "END"


# Names of 4 to 64 characters go into the tape's string table (docs/FORMAT.md), others are inline.
@pytest.mark.parametrize("name", ["t", "time.time", "x" * 64, "x" * 65, "temps.\u00e9t\u00e9", "\U0001f600" * 5])
def test_names_match_by_value_interned_or_not(impl, tmp_path, name):
    r = _tape(impl, tmp_path / "t.bin", (name, 7, "RESULT", None), (name, 7, "ERROR", ValueError("no")))
    assert _take(r, name + "x", 7) is None
    assert _take(r, name[:-1], 7) is None
    assert _take(r, name, 7) == (True, None, True)
    ok, err, same = _take(r, name, 7)
    assert (ok, type(err), str(err), same) == (False, ValueError, "no", True)
    assert r.read() == "END"


def test_a_mismatch_consumes_nothing(impl, tmp_path):
    r = _tape(impl, tmp_path / "t.bin", ("time.time", 2**40, "RESULT", 3))
    assert _take(r, "time.time", 2**40, thread=1) is None      # another thread's call
    assert r.take_call(0, "CALLX", "time.time", 2**40, "RESULT", "ERROR") is None
    assert r.take_call(0, "CALL", "time.time", 2**40, "RESULTX", "ERRORX") is None
    assert _take(r, "time.time", True) is None
    assert [r.read() for _ in range(6)] == ["CALL", "time.time", 2**40, "RESULT", 3, "END"]


def test_equal_numbers_of_other_types_match_as_before(impl, tmp_path):
    # Python equality decides when the recorded value is not a plain int.
    r = _tape(impl, tmp_path / "t.bin", ("f", 1.0, "RESULT", "a"), ("f", 2, "RESULT", "b"))
    assert _take(r, "f", 1) == (True, "a", True)
    assert _take(r, "f", 2.0) == (True, "b", True)


def test_a_tag_seen_first_in_a_failed_match_keeps_the_string_table_in_step(impl, tmp_path):
    # "ERROR" is defined (first use) where "RESULT" is tried first: the
    # table must not keep it twice, or every later reference is off by one.
    r = _tape(impl, tmp_path / "t.bin", ("open", 1, "ERROR", OSError(5, "gone")), ("time.time", 2, "RESULT", "later"),
              ("time.time", 2, "ERROR", KeyError("key1")), ("time.time", 3, "RESULT", "after"))
    ok, err, _ = _take(r, "open", 1)
    assert (ok, type(err), err.args) == (False, OSError, (5, "gone"))
    assert _take(r, "time.time", 2) == (True, "later", True)
    ok, err, _ = _take(r, "time.time", 2)
    assert (ok, type(err), err.args) == (False, KeyError, ("key1",))
    assert [r.read() for _ in range(6)] == ["CALL", "time.time", 3, "RESULT", "after", "END"]
