"""Bad input: every kind of damage is a RecordingFormatError that says where,
and everything before the damage is still readable. Plus fuzzing."""
import os
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from retracesoftware.utils.errors import RecordingFormatError

VALUES = [1, "first-string", (2, 3), {"k": [4.5, None]}, b"bytes", 2**70, "first-string"]


def make(impl, path, frames=3):
    w = impl.StreamWriter(path, {"p": 1}, flush_interval=3600, buffer_size=1 << 30)
    for _ in range(frames):
        w.write(*VALUES)
        w.flush()
    w.close()
    return path.read_bytes()


def frame_offsets(data):
    pos, out = 12, []
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos)[0]
        out.append((pos, length))
        pos += 8 + length
    return out


def read_until_error(impl, path):
    r = impl.StreamReader(path)
    got = []
    with pytest.raises(RecordingFormatError) as ei:
        while True:
            got.append(r.read())
    return got, ei.value


def test_truncated_mid_frame(impl, tmp_path):
    p = tmp_path / "r.bin"
    data = make(impl, p)
    frames = frame_offsets(data)
    last_off, last_len = frames[-1]
    p.write_bytes(data[:last_off + 8 + last_len // 2])
    got, err = read_until_error(impl, p)
    assert got == VALUES * 2
    assert err.offset == last_off and err.frame == 3 and err.event == 2 * len(VALUES)
    assert "torn frame" in str(err) and "readable" in str(err)


def test_torn_frame_header(impl, tmp_path):
    p = tmp_path / "r.bin"
    data = make(impl, p)
    last_off, _ = frame_offsets(data)[-1]
    p.write_bytes(data[:last_off + 5])
    got, err = read_until_error(impl, p)
    assert got == VALUES * 2 and err.offset == last_off


def test_crc_mismatch(impl, tmp_path):
    p = tmp_path / "r.bin"
    data = bytearray(make(impl, p))
    off, length = frame_offsets(bytes(data))[2]
    data[off + 8 + length - 1] ^= 0xFF
    p.write_bytes(bytes(data))
    got, err = read_until_error(impl, p)
    assert got == VALUES
    assert "CRC" in str(err) and err.offset == off and err.frame == 2
    r = impl.StreamReader(p)
    for _ in VALUES:
        r.read()
    for _ in range(2):  # the damage stays reported, it is not skipped
        with pytest.raises(RecordingFormatError, match="CRC"):
            r.read()


def test_garbage_payload_with_good_crc(impl, tmp_path):
    p = tmp_path / "r.bin"
    data = make(impl, p)
    off, length = frame_offsets(data)[2]
    payload = bytearray(data[off + 8: off + 8 + length])
    payload[0:1] = b"\xc1"  # never-used msgpack byte
    frame = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    p.write_bytes(data[:off] + frame + data[off + 8 + length:])
    got, err = read_until_error(impl, p)
    assert got == VALUES and err.offset == off + 8 and err.event == len(VALUES)
    assert "undecodable" in str(err)


@pytest.mark.parametrize("head,what", [
    (b"", "bad magic"), (b"NOTAREC!\x01\x00\x00\x00", "bad magic"),
    (b"\x89RTRC\r\n\x1a\x03\x00\x00\x00", "format version 3"),
    (b"\x89RTRC\r\n\x1a\x00\x00\x00\x00", "format version 0"),
    (b"\x89RTRC\r\n\x1a\x01\x00", "header"),
    (b"\x89RTRC\r\n\x1a\x01\x00\x00\x00", "no preamble"),
    (b"\x89RTRC\r\n\x1a\x01\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00ab", "torn frame"),
    (b"\x89RTRC\r\n\x1a\x01\x00\x00\x00\x01\x00\x00\x00" + struct.pack("<I", zlib.crc32(b"\x01")) + b"\x01",
     "bad preamble"),
])
def test_bad_header(impl, tmp_path, head, what):
    p = tmp_path / "bad.bin"
    p.write_bytes(head)
    with pytest.raises(RecordingFormatError, match=what) as ei:
        impl.StreamReader(p)
    assert ei.value.frame == 0 and isinstance(ei.value.offset, int)


def check_reads_safely(impl, path):
    """Read to the end: only values, EOFError, RecordingFormatError allowed."""
    try:
        r = impl.StreamReader(path)
    except RecordingFormatError:
        return
    for _ in range(10000):
        try:
            kind = r.next_kind
            if kind is None:
                return
            if kind == "binding":
                r.bind(object())
            else:
                r.read()
        except RecordingFormatError:
            return
        except LookupError:  # a hook value whose name has no reader hook
            return
    pytest.fail("reader did not terminate")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from retracesoftware.stream import _python
    p = tmp_path_factory.mktemp("s") / "sample.bin"
    w = _python.StreamWriter(p, {"p": [1, 2]}, thread_id=lambda: 1, flush_interval=3600)
    o = object()
    w.bind(o)
    w.write(*VALUES, o, ValueError("x"), {1, 2}, frozenset({3}), 3 + 1j)
    w.flush()
    w.write("tail-string", o, (o,))
    w.unbind(o)
    w.close()
    return p.read_bytes()


@settings(max_examples=int(os.environ.get("RETRACE_FUZZ_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutated_recordings(impl, tmp_path, sample, data):
    buf = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "fixcrc"]))
        if op == "flip" and buf:
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del buf[data.draw(st.integers(0, len(buf))):]
        elif op == "insert":
            i = data.draw(st.integers(0, len(buf)))
            buf[i:i] = data.draw(st.binary(max_size=16))
    # recompute CRCs sometimes, so payload-level garbage reaches the decoder
    if data.draw(st.booleans()):
        pos = 12
        while pos + 8 <= len(buf):
            length = struct.unpack_from("<I", buf, pos)[0]
            if pos + 8 + length > len(buf):
                break
            struct.pack_into("<I", buf, pos + 4, zlib.crc32(buf[pos + 8:pos + 8 + length]))
            pos += 8 + length
    p = tmp_path / "fuzz.bin"
    p.write_bytes(bytes(buf))
    check_reads_safely(impl, p)


@settings(max_examples=int(os.environ.get("RETRACE_FUZZ_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=200))
def test_fuzz_random_payloads(impl, tmp_path, payload):
    pre = b"\x80"
    head = b"\x89RTRC\r\n\x1a\x01\x00\x00\x00" + struct.pack("<II", 1, zlib.crc32(pre)) + pre
    p = tmp_path / "rand.bin"
    p.write_bytes(head + struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    check_reads_safely(impl, p)


@pytest.mark.slow
@settings(max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=2000))
def test_fuzz_random_payloads_long(impl, tmp_path, payload):
    test_fuzz_random_payloads.hypothesis.inner_test(impl, tmp_path, payload)
