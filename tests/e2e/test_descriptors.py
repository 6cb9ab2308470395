"""The program's own descriptor plumbing (dup, dup2, close of its standard
streams, signal.set_wakeup_fd) has the same effect on replay as recorded
(install/output.py)."""
import sys

import pytest

from retrace_testing import assert_faithful

REDIRECT = """
    import os, random, sys, tempfile
    print("start", flush=True)
    saved = os.dup(1)
    tmp = tempfile.TemporaryFile()
    os.dup2(tmp.fileno(), 1)
    print("captured", random.random(), flush=True)          # into the file
    sys.__stdout__.buffer.write(b"also captured\\n"); sys.__stdout__.flush()
    os.write(1, b"os.write captured\\n")
    os.dup2(saved, 1)
    os.close(saved)
    print("back", flush=True)
    tmp.seek(0)
    data = tmp.read()
    print("the file holds", data)
    os.close(2)
    fd = os.open(os.devnull, os.O_WRONLY)
    print("fd", fd, file=sys.stderr, flush=True)   # to whatever fd 2 is now: not the terminal
    os.write(1, b"end\\n")
"""


def test_dup2_over_stdout_redirects_on_replay(scenario):
    s = scenario(REDIRECT)
    rec = assert_faithful(s)
    assert b"captured" not in rec.stdout.split(b"the file holds")[0], rec.out
    assert b"the file holds b'captured" in rec.stdout, rec.out
    rep = s.replay()
    assert rep.stderr == rec.stderr == b"", rep.err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors")
def test_set_wakeup_fd_with_a_replayed_socket(scenario):
    """trio passes a socketpair's fd to signal.set_wakeup_fd: on replay that
    descriptor number is a recorded one (no socket exists), so the call
    must not be made for real (it raised ValueError/EBADF)."""
    s = scenario("""
        import random, signal, socket
        a, b = socket.socketpair()
        b.setblocking(False)
        old = signal.set_wakeup_fd(b.fileno(), warn_on_full_buffer=False)
        print("old", old, random.random())
        print("mine", signal.set_wakeup_fd(-1) == b.fileno())
        a.close(); b.close()
    """)
    assert_faithful(s)


def test_a_recorded_pytest_session_prints_what_it_printed(scenario):
    """pytest's default capture dup2s a temporary file over fd 1 and 2
    around every test: what a test writes through the interpreter's own
    streams went into that file when recorded, and must not reach the
    terminal on replay."""
    s = scenario("""
        import os, random, sys

        def test_quiet():
            print("captured print", random.random())
            sys.__stdout__.write("leaked through sys.__stdout__\\n")
            sys.__stdout__.flush()
            os.write(1, b"leaked through fd 1\\n")

        def test_loud():
            print("shown by -rP", random.random())
    """, name="test_app.py")
    command = ["python", "-m", "pytest", "-v", "-rP", "-p", "no:cacheprovider", "test_app.py"]
    rec = s.record(command=command)
    assert rec.returncode == 0, rec.out + rec.err
    # Only in the captured section -rP shows, never in the test lines.
    assert rec.stdout.count(b"leaked through fd 1") == 1, rec.out
    assert rec.stdout.index(b"leaked") > rec.stdout.index(b"Captured stdout"), rec.out
    rep = s.replay()
    assert rep.stdout == rec.stdout, rep.out + rep.err
    assert rep.returncode == 0, rep.err
