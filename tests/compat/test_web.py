"""Web frameworks and HTTP clients (issue 19)."""
from retrace_testing import assert_faithful, require

SERVER = """
import http.server, random, threading
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{self.path} {random.random()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
URL = f"http://127.0.0.1:{server.server_port}"
"""


def test_flask_app_serving_requests_from_a_client_thread(scenario):
    require("flask", "werkzeug")
    s = scenario("""
        import random, threading, urllib.request
        from flask import Flask, jsonify
        from werkzeug.serving import make_server
        app = Flask(__name__)
        @app.route("/roll/<int:n>")
        def roll(n):
            return jsonify(n=n, value=random.random())
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        results = []
        def client():
            for n in range(3):
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/roll/{n}") as r:
                    results.append(r.read().decode().strip())
        t = threading.Thread(target=client)
        t.start(); t.join()
        server.shutdown()
        print("\\n".join(results))
        with app.test_client() as c:
            print(c.get("/roll/9").get_json()["n"])
    """)
    rec = assert_faithful(s)
    assert rec.stdout.count(b'"value"') == 3


def test_requests_against_a_local_server(scenario):
    require("requests")
    s = scenario(SERVER + """
import requests
with requests.Session() as session:
    for path in ("/a", "/b"):
        r = session.get(URL + path, timeout=5)
        print(r.status_code, r.text)
""")
    assert_faithful(s)


def test_httpx_against_a_local_server(scenario):
    require("httpx")
    s = scenario(SERVER + """
import httpx
with httpx.Client() as client:
    for path in ("/x", "/y"):
        r = client.get(URL + path)
        print(r.status_code, r.text)
""")
    assert_faithful(s)


def test_django_orm_on_sqlite(scenario):
    require("django")
    s = scenario("""
        import random
        import django
        from django.conf import settings
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}},
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
            USE_TZ=True)
        django.setup()
        from django.core.management import call_command
        from django.contrib.auth.models import User
        call_command("migrate", verbosity=0)
        for i in range(3):
            User.objects.create(username=f"user{i}-{random.randrange(10**6)}")
        print(sorted(u.username for u in User.objects.all()))
        print(User.objects.filter(username__startswith="user1").count())
    """)
    assert_faithful(s)
