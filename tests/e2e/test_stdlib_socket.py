"""socket: tcp/udp/unix, name lookups, socketpair, makefile, recv_into.

Every program talks to itself over loopback (a server thread or a child
process); the replay runs without any network and must print the same bytes."""
import pytest

from stdlib_support import assert_offline_faithful, has_offline

pytestmark = pytest.mark.skipif(not has_offline(), reason="cannot make a network-less namespace (unshare -rn)")


def test_tcp_echo_with_server_thread(scenario):
    s = scenario("""
        import socket, threading, random, os
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def serve():
            conn, addr = srv.accept()
            with conn:
                data = conn.recv(1024)
                conn.sendall(data.upper() + b" " + os.urandom(4).hex().encode())

        t = threading.Thread(target=serve)
        t.start()
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(f"hello {random.random()}".encode())
        chunks = []
        while True:
            chunk = c.recv(7)
            if not chunk:
                break
            chunks.append(chunk)
        print(b"".join(chunks), len(chunks) > 1, c.getpeername()[1] == port)
        print(c.family, c.type, c.gettimeout())
        c.close(); t.join(); srv.close()
        print("port", port, c.fileno())
    """)
    assert_offline_faithful(s, replays=2)


def test_tcp_server_in_child_process(scenario):
    s = scenario("""
        import socket, subprocess, sys
        child = subprocess.Popen([sys.executable, "server.py"], stdout=subprocess.PIPE)
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"ping")
            f = c.makefile("rb")
            print(f.readline().decode().strip())
            print(f.read().decode())
            f.close()
        print("child exit", child.wait())
    """)
    s.write("server.py", """
        import socket, os, sys
        srv = socket.create_server(("127.0.0.1", 0))
        print(srv.getsockname()[1], flush=True)
        conn, _ = srv.accept()
        msg = conn.recv(100)
        conn.sendall(msg + b" pong " + os.urandom(6).hex().encode() + b"\\nrest of stream")
        conn.close()
    """)
    assert_offline_faithful(s, delete=["server.py"])


def test_udp_roundtrip(scenario):
    s = scenario("""
        import socket, random
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
        payload = random.randbytes(16)
        a.sendto(payload, b.getsockname())
        data, addr = b.recvfrom(100)
        print(data.hex(), addr == a.getsockname(), addr[1])
        buf = bytearray(32)
        b.sendto(b"into:" + payload[:4], a.getsockname())
        n, addr2 = a.recvfrom_into(buf)
        print(n, bytes(buf[:n]), addr2[1])
        a.close(); b.close()
    """)
    assert_offline_faithful(s)


def test_unix_socket_stream(scenario):
    s = scenario("""
        import socket, threading, os, random
        # (not tempfile: its random names are another issue's scenario)
        path = f"sock-{os.getpid()}-{random.randint(0, 10**6)}"
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path); srv.listen(1)

        def serve():
            conn, _ = srv.accept()
            buf = bytearray(64)
            n = conn.recv_into(buf)
            conn.sendall(bytes(buf[:n])[::-1])
            conn.close()

        t = threading.Thread(target=serve); t.start()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        c.sendall(str(random.random()).encode())
        print(c.recv(64))
        c.close(); t.join(); srv.close()
        os.unlink(path)
        print("exists after", os.path.exists(path))
    """)
    assert_offline_faithful(s)


def test_socketpair_and_makefile(scenario):
    s = scenario("""
        import socket, random
        a, b = socket.socketpair()
        wa = a.makefile("w")
        rb = b.makefile("r")
        for i in range(3):
            wa.write(f"line {i} {random.random()}\\n")
        wa.flush()
        print(rb.readline(), end="")
        print(rb.readline(), end="")
        buf = bytearray(10)
        a.send(b"0123456789")
        view = memoryview(buf)
        n = b.recv_into(view[2:], 4)
        print(rb.readline(), end="")
        print(n, bytes(buf))
        wa.close(); rb.close(); a.close(); b.close()
    """)
    assert_offline_faithful(s)


def test_name_lookups(scenario):
    s = scenario("""
        import socket, random
        print(socket.gethostname())
        infos = socket.getaddrinfo("localhost", 80 + random.randint(0, 1000), type=socket.SOCK_STREAM)
        print(sorted(set((i[0], i[4][1]) for i in infos)))
        print(socket.gethostbyname("localhost"), socket.getfqdn() is not None)
        print(socket.getservbyname("http", "tcp"), socket.getdefaulttimeout())
    """)
    assert_offline_faithful(s)


def test_connection_refused_is_replayed(scenario):
    s = scenario("""
        import socket, random
        probe = socket.socket(); probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]; probe.close()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError as exc:
            print(type(exc).__name__, exc.errno, port, random.random())
        s = socket.socket(); s.settimeout(0.5)
        print(s.connect_ex(("127.0.0.1", port)), s.gettimeout())
        s.close()
    """)
    assert_offline_faithful(s)


def test_a_socket_finalized_at_interpreter_shutdown_says_nothing(scenario):
    # a keep-alive connection the server's handler thread still holds when
    # the program ends: its socket is finalized after our modules' globals
    # were cleared; the finalizer we install ran outside the recording
    # through a global that was None by then ("Exception ignored in:
    # <function socket.__del__>... phase must be an int ... got NoneType")
    s = scenario("""
        import http.server, threading, json, http.client, random

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = json.dumps({"path": self.path, "n": random.random()}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
        for i in range(3):
            conn.request("GET", f"/r{i}")
            print(conn.getresponse().read())
        server.shutdown()
    """)
    rec = assert_offline_faithful(s)
    assert "Exception ignored" not in rec.err, rec.err
