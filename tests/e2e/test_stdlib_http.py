"""http.server + urllib on loopback: the replay has no network."""
import pytest

from stdlib_support import assert_offline_faithful, has_offline

pytestmark = pytest.mark.skipif(not has_offline(), reason="cannot make a network-less namespace (unshare -rn)")


def test_http_server_thread_and_urllib(scenario):
    s = scenario("""
        import http.server, threading, urllib.request, urllib.error, json, random, os

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/missing":
                    self.send_error(404, "nothing here")
                    return
                body = json.dumps({"path": self.path, "token": os.urandom(4).hex()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers["Content-Length"])
                data = self.rfile.read(n)
                self.send_response(201)
                self.end_headers()
                self.wfile.write(data.upper())

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        t.start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(base + f"/item/{random.randint(0, 999)}") as r:
            print(r.status, r.headers["Content-Type"], json.loads(r.read()))
        req = urllib.request.Request(base + "/post", data=f"body {random.random()}".encode(), method="POST")
        with urllib.request.urlopen(req) as r:
            print(r.status, r.read())
        try:
            urllib.request.urlopen(base + "/missing")
        except urllib.error.HTTPError as exc:
            print("HTTPError", exc.code, exc.reason)
        server.shutdown(); server.server_close(); t.join()
        print("port", server.server_address[1])
    """)
    assert_offline_faithful(s, replays=2)


def test_http_client_against_child_server(scenario):
    s = scenario("""
        import http.client, subprocess, sys, random
        child = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
                                  "--directory", "site"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = child.stdout.readline().decode()
        port = int(line.split("port ")[1].split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/data.txt")
        resp = conn.getresponse()
        words = resp.read().decode().split()
        print(resp.status, resp.getheader("Content-Length"), words[random.randint(0, 4)], random.random())
        conn.close()
        child.terminate(); print("child", child.wait())
    """)
    s.write("site/data.txt", "alpha beta gamma delta epsilon")
    assert_offline_faithful(s, delete=["site"])
