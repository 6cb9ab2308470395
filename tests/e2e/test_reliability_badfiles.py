"""Bad recordings at replay: one clear line, exit code 4 (or 3 for an edit
the CRC cannot see), never a traceback without --debug, never a hang or a
crash. The table below is the contract (docs/RELIABILITY.md); the fuzz test
throws mutated recordings at the whole replay path (the real CLI)."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from retrace_testing import Scenario, run

MAGIC = b"\x89RTRC\r\n\x1a"
HEADER = 12

PROGRAM = """
    import os, random, time
    print(repr(time.time()), repr(random.random()), repr(os.environ.get("HOME")))
    print(repr(time.monotonic()), repr(os.urandom(4)))
"""


def frames(data: bytes):
    """(offset, length) of each whole frame (the preamble is frame 0)."""
    out, pos = [], HEADER
    while pos + 8 <= len(data):
        length, _ = struct.unpack_from("<II", data, pos)
        length &= 0x7FFFFFFF                 # top bit: a zstd-compressed frame (format version 2)
        if pos + 8 + length > len(data):
            break
        out.append((pos, length))
        pos += 8 + length
    return out


def fix_crcs(data: bytes) -> bytes:
    """Recompute every whole frame's CRC (so an edit reaches the decoder)."""
    buf = bytearray(data)
    for pos, length in frames(bytes(buf)):
        struct.pack_into("<I", buf, pos + 4, zlib.crc32(bytes(buf[pos + 8:pos + 8 + length])) & 0xFFFFFFFF)
    return bytes(buf)


def replace_in_events(data: bytes, old: bytes, new: bytes) -> bytes:
    first_event_frame = frames(data)[1][0]
    head, tail = data[:first_event_frame], data[first_event_frame:]
    assert old in tail
    return fix_crcs(head + tail.replace(old, new))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    s = Scenario(d, PROGRAM)
    rec = s.record(options=("--no-compress",))   # the tests edit raw event bytes
    assert rec.returncode == 0, rec.err
    rep = s.replay()
    assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.err
    return s, s.recording.read_bytes()


def _edit_one_byte(data):
    buf = bytearray(data)
    pos, length = frames(data)[-1]
    buf[pos + 8 + length // 2] ^= 0x40
    return bytes(buf)


# name -> (make bytes from the good recording, exit code, words the line must hold)
BAD_FILES = {
    "empty file": (lambda g: b"", 4, "is empty"),
    "random bytes": (lambda g: bytes(range(7, 250, 3)) * 5, 4, "not a retrace recording"),
    "PNG image": (lambda g: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), 4, "not a retrace recording"),
    "zip archive": (lambda g: b"PK\x03\x04\x14\x00\x00\x00" + bytes(64), 4, "not a retrace recording"),
    "truncated header": (lambda g: g[:10], 4, "file ends inside the header"),
    "header only": (lambda g: g[:HEADER], 4, "no preamble frame"),
    "truncated preamble": (lambda g: g[:HEADER + 30], 4, "torn frame"),
    "future format version": (lambda g: g[:8] + struct.pack("<I", 99) + g[12:], 4, "format version 99"),
    "one value edited (CRC)": (_edit_one_byte, 4, "CRC mismatch"),
    "garbage after a good frame": (lambda g: g + b"\x05\x00\x00\x00\x00\x00\x00\x00\xc1\xc1\xc1\xc1\xc1", 4,
                                   "damaged at event"),
    "call name edited, CRC fixed": (lambda g: replace_in_events(g, b"time.time", b"time.tame"), 3,
                                    "expected call time.tame"),
    # A divergence before the program starts (retrace's own start-up calls)
    # must end the replay at once, not hang in the interpreter's shutdown.
    "start-up call edited, CRC fixed": (
        lambda g: replace_in_events(g, b"retrace.thread.identify", b"retrace.thread.identifz"), 3,
        "expected call retrace.thread.identifz"),
    "preamble replaced by a list": (
        lambda g: g[:HEADER] + struct.pack("<II", 1, zlib.crc32(b"\x90")) + b"\x90", 4, "bad preamble"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_recording(good, tmp_path, case):
    s, data = good
    make, code, words = BAD_FILES[case]
    path = tmp_path / "bad.bin"
    path.write_bytes(make(data))
    rep = run([sys.executable, "-m", "retracesoftware", "--recording", str(path)], s.dir, timeout=60)
    assert rep.returncode == code, rep.err
    first = rep.err.splitlines()[0]
    assert first.startswith("retrace: error: ") and words in first, rep.err
    assert "Traceback" not in rep.err
    if code == 4:
        assert len(rep.err.splitlines()) == 1, rep.err
    else:
        assert all(line.startswith("retrace:") for line in rep.err.splitlines()), rep.err
    # inspect reads the same file without a traceback either
    ins = run([sys.executable, "-m", "retracesoftware", "inspect", str(path)], s.dir, timeout=60)
    assert "Traceback" not in ins.err and ins.returncode in (0, 4), ins.err
    if ins.returncode == 4:
        assert len(ins.err.splitlines()) == 1, ins.err
    # --debug shows the traceback
    if code == 4:
        dbg = run([sys.executable, "-m", "retracesoftware", "--recording", str(path), "--debug"], s.dir,
                  timeout=60)
        assert dbg.returncode == 4 and "Traceback" in dbg.err, dbg.err


def test_a_directory_or_a_missing_path(good, tmp_path):
    s, _ = good
    for path, words in ((tmp_path, "is a directory"), (tmp_path / "nope.bin", "does not exist")):
        rep = run([sys.executable, "-m", "retracesoftware", "--recording", str(path)], s.dir)
        assert rep.returncode == 4 and rep.err.count("\n") == 1 and words in rep.err, rep.err


# ------------------------------------------------------------------- fuzz
MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 16)),
)


def mutate(data: bytes, mutations, fix: bool, events_only: bool) -> bytes:
    buf = bytearray(data)
    start = frames(data)[1][0] if events_only else 0
    for op, where, arg in mutations:
        if len(buf) <= start:
            break
        # events_only: the edit lands after the preamble, where the events are
        i = start + where % (len(buf) - start)
        if op == "flip":
            buf[i] ^= arg
        elif op == "set":
            buf[i] = arg
        elif op == "truncate":
            del buf[i:]
        elif op == "insert":
            buf[i:i] = bytes([arg])
        else:
            del buf[i:i + arg]
    out = bytes(buf)
    return fix_crcs(out) if fix else out


def _replay_mutant(s, path, data):
    path.write_bytes(data)
    try:
        rep = run([sys.executable, "-m", "retracesoftware", "--recording", str(path), "--thread-timeout", "5"],
                  s.dir, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("replay of a mutated recording hung")
    # The program only prints reprs: any outcome but ours is a bug.
    assert rep.returncode in (0, 3, 4), (rep.returncode, rep.err)
    assert "Traceback" not in rep.err, rep.err
    assert "internal error" not in rep.err, rep.err
    if rep.returncode:
        lines = rep.err.splitlines()
        assert lines and lines[0].startswith("retrace: error: "), rep.err
        assert all(line.startswith("retrace:") for line in lines), rep.err


def _fuzz(good, tmp_path, mutations, fix, events_only):
    s, data = good
    _replay_mutant(s, tmp_path / "mutant.bin", mutate(data, mutations, fix, events_only))


_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(max_examples=8, **_SETTINGS)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4), fix=st.booleans(), events_only=st.booleans())
def test_fuzz_mutated_recordings_short(good, tmp_path, mutations, fix, events_only):
    _fuzz(good, tmp_path, mutations, fix, events_only)


@pytest.mark.slow
@settings(max_examples=400, **{**_SETTINGS, "derandomize": False})
@given(mutations=st.lists(MUTATION, min_size=1, max_size=8), fix=st.booleans(), events_only=st.booleans())
def test_fuzz_mutated_recordings_long(good, tmp_path, mutations, fix, events_only):
    _fuzz(good, tmp_path, mutations, fix, events_only)



# ------------------------------------------------- fuzz over a corpus
# Real recordings of programs with threads, sockets, a subprocess and
# asyncio; mutants made by bit flips, truncation, insertions, splices of two
# recordings and huge length fields (frame lengths and msgpack lengths),
# CRCs fixed or not. Each mutant is replayed through the CLI under an
# address-space limit. Allowed: exit 3 or 4 with only `retrace:` lines on
# stderr (one error line, plus a divergence's optional stack lines and
# warnings), or exit 0 when the edit only changed data the program printed;
# never a traceback of ours, an internal error, a signal or a hang.

CORPUS = {
    "threads": """
        import queue, threading, time
        q = queue.Queue()
        lock = threading.Lock()
        def work(n):
            with lock:
                q.put((n, time.time()))
        ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in ts: t.start()
        for t in ts: t.join()
        print(sorted(q.get()[0] for _ in range(3)), time.time())
    """,
    "sockets": """
        import os, select, socket
        a, b = socket.socketpair()
        a.sendall(os.urandom(8).hex().encode())
        select.select([b], [], [], 5)
        print(b.recv(64))
        a.close(); b.close()
    """,
    "subprocess": """
        import subprocess, sys, time
        out = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                             capture_output=True, text=True).stdout
        print("child said", out.strip(), time.time())
    """,
    "asyncio": """
        import asyncio, random
        async def one(i):
            await asyncio.sleep(0.001)
            return i, random.random()
        async def main():
            return await asyncio.gather(*(one(i) for i in range(3)))
        print(asyncio.run(main()))
    """,
}

ADDRESS_LIMIT = 3 << 30        # bytes of address space a replay may map
FUZZ_TIMEOUT = 60


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = {}
    for name, program in CORPUS.items():
        d = tmp_path_factory.mktemp(name)
        s = Scenario(d, program)
        # two raw (edits reach the decoder), two compressed (the zstd path)
        rec = s.record(options=("--no-compress",) if name in ("threads", "sockets") else ())
        assert rec.returncode == 0, rec.err
        out[name] = (s, rec.stdout, s.recording.read_bytes())
    return out


def _huge(rng, buf, start):
    """A length field claiming far more than the file holds."""
    if rng.random() < 0.5:
        fr = frames(bytes(buf))
        if fr:
            pos, _ = rng.choice(fr)
            struct.pack_into("<I", buf, pos, rng.choice([0xFFFFFFFF, 0x7FFFFFF0, len(buf) * 4]))
            return
    i = start + rng.randrange(max(1, len(buf) - start))
    head = rng.choice([b"\xdd\xff\xff\xff\xf0", b"\xdf\x7f\xff\xff\xff", b"\xc6\xff\xff\xff\xf0",
                       b"\xdb\x7f\xff\xff\xf0", b"\xc9\xff\xff\xff\xf0\x0b", b"\xc9\x7f\xff\xff\xf0\x02"])
    buf[i:i + len(head)] = head


def make_mutant(rng, data: bytes, other: bytes) -> tuple[str, bytes]:
    buf = bytearray(data)
    start = frames(data)[1][0] if len(frames(data)) > 1 and rng.random() < 0.7 else 0
    kind = rng.choice(["flip", "truncate", "insert", "splice", "huge", "flip"])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            i = start + rng.randrange(len(buf) - start)
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del buf[start + rng.randrange(len(buf) - start):]
    elif kind == "insert":
        i = start + rng.randrange(len(buf) - start)
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "splice":
        cut = start + rng.randrange(len(buf) - start)
        ofr = frames(other)
        ocut = rng.choice(ofr)[0] if ofr and rng.random() < 0.5 else rng.randrange(HEADER, len(other))
        buf = buf[:cut] + bytearray(other[ocut:])
    else:
        _huge(rng, buf, start)
    fix = rng.random() < 0.6
    out = bytes(buf)
    return kind + ("+crc" if fix else ""), (fix_crcs(out) if fix else out)


def _limit_memory():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_LIMIT, ADDRESS_LIMIT))


def classify(s, path, data, original_stdout) -> tuple[str, int | None]:
    """Replay one mutant: (outcome, exit code). Outcomes other than
    "ok-3", "ok-4", "ok-0-same", "ok-0-data" are failures."""
    from retrace_testing import _env
    path.write_bytes(data)
    try:
        proc = subprocess.run([sys.executable, "-m", "retracesoftware", "--recording", str(path),
                               "--thread-timeout", "5"], cwd=s.dir, env=_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=FUZZ_TIMEOUT, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        return "hang", None
    err = proc.stderr.decode("utf-8", "replace")
    lines = err.splitlines()
    code = proc.returncode
    if code < 0:
        return f"signal {-code}", code
    if "internal error" in err or "Fatal Python error" in err or (
            "Traceback" in err and "/retracesoftware/" in err):
        return "traceback", code
    if "Traceback" in err:
        # The program's own traceback: an edited preamble or value made its
        # code fail (recorded data is data); then the exit code diverges.
        return ("ok-program-traceback" if code == 3 and lines[-1].startswith("retrace:")
                else "traceback"), code
    if code in (3, 4):
        errors = [ln for ln in lines if ln.startswith("retrace: error: ")]
        if len(errors) != 1 or not all(ln.startswith("retrace:") for ln in lines):
            return "stderr-not-one-line", code
        return f"ok-{code}", code
    if code == 0 and all(ln.startswith("retrace: warning:") for ln in lines):
        return ("ok-0-same" if proc.stdout == original_stdout else "ok-0-data"), code
    return f"exit {code}", code


def run_fuzz(corpus, tmp_path, n, seed):
    import random
    import resource
    rng = random.Random(seed)
    names = sorted(corpus)
    outcomes, failures = {}, []
    for k in range(n):
        name = names[k % len(names)]
        s, stdout, data = corpus[name]
        other = corpus[rng.choice(names)][2]
        how, mutant = make_mutant(rng, data, other)
        outcome, _ = classify(s, tmp_path / f"mutant-{name}.bin", mutant, stdout)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if not outcome.startswith("ok-"):
            keep = tmp_path / f"failed-{k}-{name}-{how}.bin"
            keep.write_bytes(mutant)
            failures.append((outcome, name, how, str(keep)))
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return outcomes, failures, peak_kib


def test_fuzz_corpus_short(corpus, tmp_path):
    outcomes, failures, _ = run_fuzz(corpus, tmp_path, 12, seed=15)
    assert not failures, (outcomes, failures)


@pytest.mark.slow
def test_fuzz_corpus_long(corpus, tmp_path):
    n = int(os.environ.get("RETRACE_FUZZ_MUTANTS", "400"))
    seed = int(os.environ.get("RETRACE_FUZZ_SEED", "0")) or None
    outcomes, failures, peak = run_fuzz(corpus, tmp_path, n, seed=seed)
    print(f"\nfuzz: {n} mutants, outcomes {outcomes}, peak RSS of a replay {peak // 1024} MiB, "
          f"failures {len(failures)}")
    for f in failures[:20]:
        print("  ", f)
    assert not failures, (outcomes, failures[:10])


def test_divergence_in_a_worker_thread_is_one_line(tmp_path):
    s = Scenario(tmp_path, """
        import threading, time
        out = []
        t = threading.Thread(target=lambda: out.append(time.time()))
        t.start(); t.join()
        print(out)
    """)
    assert s.record(options=("--no-compress",)).returncode == 0
    data = s.recording.read_bytes()
    s.recording.write_bytes(replace_in_events(data, b"time.time", b"time.tame"))
    rep = run([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording)], s.dir, timeout=60)
    assert rep.returncode == 3, rep.err
    lines = rep.err.splitlines()
    assert lines[0].startswith("retrace: error: replay diverged") and "time.tame" in lines[0], rep.err
    assert all(line.startswith("retrace:") for line in lines) and "Traceback" not in rep.err, rep.err
