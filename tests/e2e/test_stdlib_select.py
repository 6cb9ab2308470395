"""select, poll, epoll and selectors: readiness is data from the outside world."""
import pytest

from stdlib_support import assert_offline_faithful, has_offline

pytestmark = pytest.mark.skipif(not has_offline(), reason="cannot make a network-less namespace (unshare -rn)")

# A child process writes random lines at its own pace; which reads are ready
# at each wait differs between plain runs.
WRITER = """
    import os, sys, time
    for i in range(5):
        sys.stdout.write(f"{i}:{os.urandom(3).hex()}\\n"); sys.stdout.flush()
        time.sleep(0.002 * (i % 3))
"""


def test_select_on_pipe_and_socketpair(scenario):
    s = scenario("""
        import select, socket, subprocess, sys, os, time
        child = subprocess.Popen([sys.executable, "writer.py"], stdout=subprocess.PIPE)
        a, b = socket.socketpair()
        a.send(b"x" * (1 + int(time.time_ns()) % 50))
        fd = child.stdout.fileno()
        log, done = [], False
        while not done:
            r, w, x = select.select([fd, b], [], [], 5.0)
            log.append(len(r))
            for ready in r:
                if ready is b:
                    log.append(len(b.recv(1000)))
                else:
                    data = os.read(fd, 4096)
                    log.append(data.decode())
                    done = not data
        print(log)
        print(child.wait())
    """)
    s.write("writer.py", WRITER)
    assert_offline_faithful(s, delete=["writer.py"])


def test_poll_and_epoll(scenario):
    s = scenario("""
        import select, os, random
        r, w = os.pipe()
        p = select.poll()
        p.register(r, select.POLLIN)
        print(p.poll(0))
        os.write(w, random.randbytes(7))
        print(p.poll(1000), os.read(r, 100).hex())
        p.modify(r, select.POLLIN | select.POLLPRI)
        p.unregister(r)
        ep = select.epoll()
        ep.register(w, select.EPOLLOUT)
        ep.register(r, select.EPOLLIN)
        os.write(w, b"abc")
        print(sorted(ep.poll(1.0)), ep.closed, ep.fileno() >= 0)
        ep.close(); print(ep.closed)
        os.close(r); os.close(w)
    """)
    assert_offline_faithful(s)


@pytest.mark.parametrize("selector", ["DefaultSelector", "PollSelector", "SelectSelector"])
def test_selectors_echo(scenario, selector):
    s = scenario("""
        import selectors, socket, random
        sel = selectors.SELECTOR()
        print(type(sel).__name__)
        srv = socket.create_server(("127.0.0.1", 0))
        srv.setblocking(False)
        sel.register(srv, selectors.EVENT_READ, data="accept")
        client = socket.create_connection(srv.getsockname())
        client.sendall(f"msg {random.random()}".encode())
        got, rounds = None, 0
        while got is None:
            rounds += 1
            for key, mask in sel.select(timeout=5):
                if key.data == "accept":
                    conn, _ = srv.accept()
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, data="read")
                else:
                    got = key.fileobj.recv(100)
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
        print(got, rounds, len(sel.get_map()))
        sel.close(); client.close(); srv.close()
    """.replace("SELECTOR", selector))
    assert_offline_faithful(s)
