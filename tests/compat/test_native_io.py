"""Libraries whose C code does its own I/O on descriptors (issue 19):
detected at record (one warning line: the recording will not replay) and
refused at replay with one error line and exit code 4 — never a deadlock
report or EBADF deep inside the library."""
from retrace_testing import require


def test_pyopenssl_connection_is_detected_and_refused(scenario):
    require("OpenSSL")
    s = scenario("""
        import random, socket
        from OpenSSL import SSL
        a, b = socket.socketpair()
        conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD), a)
        print("made", random.random())
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    warnings = [line for line in rec.err.splitlines() if line.startswith("retrace: warning")]
    assert len(warnings) == 1 and "pyOpenSSL does its own I/O in C" in warnings[0], rec.err
    rep = s.replay()
    assert rep.returncode == 4, rep.err
    assert rep.err.strip().splitlines() == [
        "retrace: error: pyOpenSSL does its own I/O in C (OpenSSL reads and writes the socket's "
        "descriptor; OpenSSL.SSL.Connection.__init__ called) — this recording will not replay; "
        "see docs/COMPATIBILITY.md"], rep.err


def test_gevent_monkey_patching_is_detected_and_refused(scenario):
    # After monkey patching, threads, sockets and sleeps are greenlets that
    # gevent's C hub switches: no boundary sees the switches. One warning
    # at record, one error line and exit 4 at replay.
    require("gevent")
    s = scenario("""
        from gevent import monkey; monkey.patch_all()
        import random, time
        time.sleep(0.001)
        print("patched", random.random())
    """)
    rec = s.record()
    assert rec.returncode == 0 and b"patched" in rec.stdout, rec.err
    warnings = [line for line in rec.err.splitlines() if line.startswith("retrace: warning")]
    assert len(warnings) == 1 and "gevent is not supported" in warnings[0], rec.err
    rep = s.replay()
    assert rep.returncode == 4, rep.err
    assert rep.err.strip().splitlines() == [
        "retrace: error: gevent is not supported (its monkey patching runs threads, sockets and sleeps "
        "as greenlets switched by its C hub; gevent.monkey.patch_all called) — this recording will not "
        "replay; see docs/COMPATIBILITY.md"], rep.err
