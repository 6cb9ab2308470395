"""ssl: a TLS echo on loopback with a self-signed certificate made at test
time; the replay has no network, no certificate and no key."""
import shutil
import subprocess

import pytest

from stdlib_support import assert_offline_faithful, has_offline

pytestmark = [
    pytest.mark.skipif(not has_offline(), reason="cannot make a network-less namespace (unshare -rn)"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is needed to make a test certificate"),
]


def _make_cert(directory):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem"),
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=120)


def test_tls_echo_thread_server(scenario):
    s = scenario("""
        import socket, ssl, threading, random, os
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain("cert.pem", "key.pem")
        client_ctx = ssl.create_default_context(cafile="cert.pem")
        srv = socket.create_server(("127.0.0.1", 0))
        port = srv.getsockname()[1]

        def serve():
            raw, _ = srv.accept()
            with server_ctx.wrap_socket(raw, server_side=True) as tls:
                data = tls.recv(1024)
                tls.sendall(data[::-1] + b"|" + os.urandom(4).hex().encode())

        t = threading.Thread(target=serve); t.start()
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                print(tls.version(), tls.cipher()[0] is not None)
                print(tls.getpeercert()["subject"])
                tls.sendall(f"secret {random.random()}".encode())
                buf = bytearray(200)
                n = tls.recv_into(buf)
                print(n, bytes(buf[:n]))
        t.join(); srv.close()
    """)
    _make_cert(s.dir)
    assert_offline_faithful(s, delete=["cert.pem", "key.pem"])


def test_tls_verification_failure_replayed(scenario):
    s = scenario("""
        import socket, ssl, threading, random
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain("cert.pem", "key.pem")
        srv = socket.create_server(("127.0.0.1", 0))

        def serve():
            raw, _ = srv.accept()
            try:
                server_ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                pass
            finally:
                raw.close()

        t = threading.Thread(target=serve); t.start()
        ctx = ssl.create_default_context()      # does not trust our certificate
        raw = socket.create_connection(srv.getsockname())
        try:
            ctx.wrap_socket(raw, server_hostname="localhost")
        except ssl.SSLCertVerificationError as exc:
            print("verify failed:", type(exc).__name__, exc.args[0], random.random())
        raw.close(); t.join(); srv.close()
    """)
    _make_cert(s.dir)
    assert_offline_faithful(s, delete=["cert.pem", "key.pem"])


BIO_PAIR = """
    import ssl, random

    def pump(src, dst):
        data = src.read()
        if data:
            dst.write(data)
        return len(data)

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain("cert.pem", "key.pem")
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = CLIENT_CTX.wrap_bio(c_in, c_out, server_hostname="localhost")

    def handshake():
        done = set()
        while len(done) < 2:
            for name, obj in (("c", client), ("s", server)):
                if name in done:
                    continue
                try:
                    obj.do_handshake()
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
            pump(c_out, s_in); pump(s_out, c_in)
"""


def test_tls_over_memory_bios(scenario):
    s = scenario(BIO_PAIR.replace("CLIENT_CTX", 'ssl.create_default_context(cafile="cert.pem")') + """
    handshake()
    print(client.version(), server.cipher()[1], client.pending())
    client.write(f"over bio {random.random()}".encode())
    pump(c_out, s_in)
    print(server.read(100), s_in.pending, c_in.eof)
    buf = bytearray(64)
    server.write(b"reply")
    pump(s_out, c_in)
    n = client.read(64, buf)
    print(n, bytes(buf[:n]))
""")
    _make_cert(s.dir)
    assert_offline_faithful(s, delete=["cert.pem", "key.pem"])


def test_tls_error_attributes(scenario):
    s = scenario(BIO_PAIR.replace("CLIENT_CTX", "ssl.create_default_context()") + """
    try:
        handshake()
    except ssl.SSLCertVerificationError as exc:
        print(exc.verify_code, exc.reason, exc.library, random.random())
""")
    _make_cert(s.dir)
    assert_offline_faithful(s, delete=["cert.pem", "key.pem"])
