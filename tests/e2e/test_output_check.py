"""What the program writes to stdout/stderr is checked on replay
(install/output.py): a replay that would print something else than the
recording stops at the first differing write (exit 3) instead of exiting 0."""
import re

from retrace_testing import assert_faithful

# Reads a file through _io.FileIO directly: a C-level read that is not a
# boundary call, so the recording does not hold what it read.
UNRECORDED_READ = """
    import _io, sys
    data = _io.FileIO("data.txt").read().decode().strip()
    print("before")
    print("the data is", data, "and that is all")
    print("after")
"""


def test_output_from_an_unrecorded_source_diverges(scenario):
    s = scenario(UNRECORDED_READ)
    s.write("data.txt", "one\n")
    first = s.plain()
    s.write("data.txt", "two\n")
    assert s.plain().stdout != first.stdout          # plain runs differ with the source
    s.write("data.txt", "one\n")
    rec = s.record()
    assert rec.returncode == 0 and b"the data is one" in rec.stdout, rec.err
    s.write("data.txt", "two\n")
    rep = s.replay()
    assert rep.returncode == 3, (rep.out, rep.err)
    assert rep.stdout.startswith(b"before\n") and b"two" not in rep.stdout, rep.out
    line = [l for l in rep.err.splitlines() if l.startswith("retrace: error:")][0]
    assert re.search(r"replay diverged at event \d+: expected output to stdout ", line), line
    assert "'the data is one'" in line and "'the data is two'" in line, line
    assert "app.py:5" in line, line
    assert "replaying at:" in rep.err and "app.py:5 in <module>" in rep.err, rep.err
    assert "Traceback" not in rep.err

    # --no-check-output: the user knowingly replays with other output.
    rep = s.replay("--no-check-output")
    assert rep.returncode == 0, rep.err
    assert b"the data is two" in rep.stdout


def test_every_way_of_writing_is_checked(scenario):
    """sys.stdout, sys.stdout.buffer, its raw FileIO, sys.__stderr__ and
    os.write on fd 1/2 (and on a dup of fd 1)."""
    buffered = {"PYTHONUNBUFFERED": ""}      # the test environment may set it
    for way, code, env in [
        ("buffer", "sys.stdout.buffer.write(data.encode() + b'\\n')", None),
        ("buffered", "sys.stdout.buffer.write(data.encode() + b'\\n')", buffered),
        ("buffered-raw", "sys.stdout.flush(); sys.stdout.buffer.raw.write(data.encode() + b'\\n')", buffered),
        ("raw", "sys.stdout.flush(); getattr(sys.stdout.buffer, 'raw', sys.stdout.buffer).write(data.encode() + b'\\n')", None),
        ("stderr", "sys.__stderr__.write(data + '\\n')", None),
        ("os.write", "sys.stdout.flush(); os.write(1, data.encode() + b'\\n')", None),
        ("os.write(2)", "os.write(2, data.encode() + b'\\n')", None),
        ("os.writev", "sys.stdout.flush(); os.writev(1, [b'>', data.encode(), b'\\n'])", None),
        ("dup", "sys.stdout.flush(); fd = os.dup(1); os.write(fd, data.encode() + b'\\n'); os.close(fd)", None),
    ]:
        s = scenario(f"""
            import _io, os, sys
            data = _io.FileIO("data.txt").read().decode().strip()
            print("start", flush=True)
            {code}
            print("end")
        """, name=f"app_{way.replace('(', '').replace(')', '').replace('.', '_')}.py")
        s.write("data.txt", "alpha")
        rec = s.record(env=env)
        assert rec.returncode == 0, (way, rec.err)
        assert b"alpha" in rec.stdout + rec.stderr, (way, rec.out, rec.err)
        rep = s.replay(env=env)
        assert rep.returncode == 0, (way, rep.err)
        assert rep.stdout == rec.stdout, (way, rep.out)
        s.write("data.txt", "bravo")
        rep = s.replay(env=env)
        assert rep.returncode == 3, (way, rep.out, rep.err)
        assert "alpha" in rep.err and "bravo" in rep.err, (way, rep.err)


def test_output_replays_faithfully(scenario):
    """The output events themselves: prints, writes, stderr, flushes in any
    order, a write error (closed stdout) replayed as recorded."""
    s = scenario("""
        import os, random, sys
        for i in range(5):
            print(i, random.random(), file=sys.stderr if i % 2 else sys.stdout)
        sys.stdout.write("no newline ")
        sys.stdout.flush()
        sys.stdout.buffer.write(b"%d\\n" % random.randrange(1000))
        os.write(1, b"raw %d\\n" % random.randrange(1000))
        print("x" * 100000)
        try:
            os.write(1234, b"x")
        except OSError as e:
            print("error", e.errno)
    """)
    rec = assert_faithful(s)
    assert rec.stdout.count(b"x" * 1000) >= 1


def test_the_exit_code_and_print_of_a_changed_program(scenario):
    """A changed program that prints one line less is caught."""
    s = scenario("""
        import random
        print(random.random())
        print("done")
    """)
    s.record()
    s.script.write_text("import random\nprint(random.random())\n")
    rep = s.replay("--force")
    assert rep.returncode == 3, rep.err


def test_file_contents_are_checked_past_their_first_bytes(scenario):
    """Writes to files, sockets and pipes are boundary calls whose argument
    fingerprint covers every byte (the first 64 and a CRC of the rest)."""
    s = scenario("""
        import _io, os
        data = _io.FileIO("data.txt").read().decode().strip()
        with open("out.txt", "w") as f:
            f.write("-" * 100 + data + "\\n")
        print("written")
    """)
    s.write("data.txt", "one")
    rec = s.record()
    assert rec.returncode == 0, rec.err
    s.write("data.txt", "two")
    rep = s.replay()
    assert rep.returncode == 3, (rep.out, rep.err)
    assert "posix.write" in rep.err, rep.err


def test_the_uncaught_exception_text_is_checked(scenario):
    s = scenario("""
        import _io
        data = _io.FileIO("data.txt").read().decode().strip()
        print("start")
        raise RuntimeError("the data was " + data)
    """)
    s.write("data.txt", "one")
    rec = s.record()
    assert rec.returncode == 1 and b"the data was one" in rec.stderr, rec.err
    rep = s.replay()
    assert rep.returncode == 1 and rep.stdout == rec.stdout, rep.err
    s.write("data.txt", "two")
    rep = s.replay()
    assert rep.returncode == 3, (rep.out, rep.err)
    assert "the data was one" in rep.err and "the data was two" in rep.err, rep.err
