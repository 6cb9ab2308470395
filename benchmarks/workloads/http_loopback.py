"""An HTTP server (http.server in a thread) and a urllib client on loopback.

The server answers each GET with fresh random bytes; the client makes N
requests and prints a digest of the bodies."""
import hashlib
import http.server
import os
import sys
import threading
import urllib.request

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.urandom(64).hex().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
thread.start()
try:
    url = f"http://127.0.0.1:{server.server_address[1]}/item"
    digest = hashlib.sha256()
    for i in range(n):
        with urllib.request.urlopen(f"{url}/{i}") as response:
            digest.update(response.read())
    print(f"{n} requests, digest {digest.hexdigest()}")
finally:
    server.shutdown()
    thread.join()
    server.server_close()
