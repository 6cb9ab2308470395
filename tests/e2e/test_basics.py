"""Core scenarios: clocks, randomness, ids, environment, exit codes, errors."""
import os

from retrace_testing import assert_faithful


def test_flaky_example_replays(scenario):
    import pathlib
    src = (pathlib.Path(__file__).parents[2] / "examples" / "flaky.py")
    if not src.exists():  # the suite may run from an installed copy of tests only
        import pytest
        pytest.skip("examples/flaky.py not present")
    assert_faithful(scenario(src.read_text()), replays=3)


def test_time_clocks(scenario):
    s = scenario("""
        import time
        values = [time.time(), time.time_ns(), time.monotonic(), time.perf_counter(),
                  time.perf_counter_ns(), time.process_time(), time.monotonic_ns()]
        print(values)
        print(time.localtime().tm_sec, time.strftime("%H:%M:%S"))
        t0 = time.perf_counter(); time.sleep(0.01); print(time.perf_counter() - t0)
    """)
    assert_faithful(s, replays=2)


def test_sleep_does_not_sleep_on_replay(scenario, tmp_path):
    # A sitecustomize (run before our runtime installs) puts a time.sleep in
    # front of the real one that notes each call in a file outside the tape.
    # The boundary wraps that function: the recording calls it once, a replay
    # must not call it at all. No wall clock involved.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, time\n"
        "_real_sleep = time.sleep\n"
        "def sleep(secs):\n"
        "    with open(os.environ['SLEPT_LOG'], 'a') as f:\n"
        "        f.write('slept %r\\n' % (secs,))\n"
        "    _real_sleep(secs)\n"
        "time.sleep = sleep\n")
    marker = tmp_path / "slept"
    env = {"PYTHONPATH": str(site), "SLEPT_LOG": str(marker)}
    s = scenario("""
        import time
        t = time.time(); time.sleep(0.2); print(time.time() - t, time.time_ns())
    """)
    rec = s.record(env=env)
    assert rec.returncode == 0, rec.stderr
    assert marker.read_text() == "slept 0.2\n"     # the test can fail: the record slept
    rep = s.replay(env=env)
    assert rep.returncode == 0, rep.stderr
    assert rep.stdout == rec.stdout
    assert marker.read_text() == "slept 0.2\n", "the replay slept"


def test_datetime_now_and_today(scenario):
    s = scenario("""
        import datetime
        print(datetime.datetime.now(), datetime.datetime.utcnow(), datetime.date.today())
        print(datetime.datetime.now(datetime.timezone.utc).isoformat())
        # Real datetimes while recording too: the program computes with them.
        now = datetime.datetime.now()
        print(type(now).__name__, isinstance(now, datetime.datetime), now + datetime.timedelta(seconds=1) > now)
        print((datetime.datetime.now(datetime.timezone.utc) - datetime.datetime(2000, 1, 1,
              tzinfo=datetime.timezone.utc)).days > 0, datetime.datetime.now().astimezone().tzinfo is not None)
    """)
    rec = assert_faithful(s)
    assert "datetime True True" in rec.out and "True True" in rec.out, rec.out


def test_random_module_and_instances(scenario):
    s = scenario("""
        import random
        print(random.random(), random.randint(1, 10**9), random.choice("abcdefghij"))
        r = random.Random()
        print(r.random(), r.getrandbits(64))
        print(random.sample(range(1000), 5), random.gauss(0, 1))
        items = list(range(20)); random.shuffle(items); print(items)
        print(random.SystemRandom().random())
    """)
    assert_faithful(s, replays=2)


def test_urandom_secrets_uuid(scenario):
    s = scenario("""
        import os, secrets, uuid
        print(os.urandom(8).hex(), secrets.token_hex(8), secrets.randbelow(10**6))
        print(uuid.uuid4(), uuid.uuid1())
    """)
    assert_faithful(s)


def test_environment_reads(scenario):
    s = scenario("""
        import os
        print(os.environ.get("RETRACE_TEST_VALUE"), os.getenv("HOME") is not None)
        print("RETRACE_TEST_VALUE" in os.environ)
    """)
    rec = s.record(env={"RETRACE_TEST_VALUE": "recorded-value"})
    rep = s.replay(env={"RETRACE_TEST_VALUE": "something-else"})
    assert b"recorded-value" in rec.stdout
    assert rep.stdout == rec.stdout, rep.err


def test_pid_and_cwd(scenario):
    s = scenario("""
        import os
        print(os.getpid(), os.getppid(), os.getcwd())
    """)
    assert_faithful(s)


def test_nonzero_exit_code(scenario):
    s = scenario("""
        import sys, time
        print(time.time())
        sys.exit(7)
    """)
    rec = assert_faithful(s, expected_code=7)
    assert rec.returncode == 7


def test_uncaught_exception(scenario):
    s = scenario("""
        import time
        print(time.time(), flush=True)
        def fail():
            raise ValueError("boom at %d" % (time.time_ns() % 1000))
        fail()
    """)
    rec = assert_faithful(s, expected_code=1)
    assert b"ValueError: boom at" in rec.stderr
    assert b"retracesoftware" not in rec.stderr, rec.err
    rep = s.replay()
    assert rep.stderr.splitlines()[-1] == rec.stderr.splitlines()[-1]


def test_dash_c_and_dash_m(scenario, tmp_path):
    s = scenario("import time\nprint('module', time.time())\n", name="mymod.py")
    assert_faithful(s, check_plain_differs=False, command=["python", "-m", "mymod"])
    s2 = scenario("print('x')\n", name="unused.py")
    rec = s2.record(command=["python", "-c", "import time, sys; print(time.time(), sys.argv)", "a1"])
    assert rec.returncode == 0 and rec.stdout, rec.err
    # code stored in the recording runs only with --trust (docs/RELIABILITY.md)
    assert s2.replay().returncode == 2
    rep = s2.replay("--trust")
    assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.err


def test_argv_is_the_programs(scenario):
    s = scenario("""
        import sys, time
        print(sys.argv, time.time())
    """)
    rec = assert_faithful(s, "one", "two")
    assert b"['app.py', 'one', 'two']" in rec.stdout


def test_module_level_clock_in_imported_module(scenario):
    s = scenario("""
        import helper, time
        print(helper.STARTED, time.time())
    """)
    s.write("helper.py", "import time\nSTARTED = time.time()\n")
    assert_faithful(s)


def test_objects_freed_after_a_replayed_error_are_freed_when_recorded(scenario):
    # A replayed OSError must not keep the frames it passed through (and
    # their locals) alive longer than the real one did: finalizers (here a
    # __del__ that prints; in multiprocessing a weakref callback closing
    # fds, a recorded call) must run at the same point as on record.
    s = scenario("""
import os, random

class Resource:
    def __init__(self, n):
        self.n = n
    def __del__(self):
        print("freed", self.n, flush=True)

def attempt(n):
    r = Resource(n)
    try:
        os.stat("/nonexistent/%d" % n)
    except OSError as exc:
        print("error", exc.errno)

for n in range(3):
    attempt(n)
    print("after", n, random.random())
""")
    rec = assert_faithful(s, check_plain_differs=True)
    assert rec.out.index("freed 0") < rec.out.index("after 0"), rec.out


def test_piped_stdin_is_recorded(scenario):
    # sys.stdin (made by the interpreter before recording began), its
    # buffer and input() read the recorded input on replay, whatever the
    # replay's own stdin is.
    s = scenario("""
import sys
first = sys.stdin.readline()
second = input()
rest = sys.stdin.buffer.read()
print(repr(first), repr(second), repr(rest))
""")
    rec = s.record(stdin=b"hello\nworld\nthe rest\n")
    assert rec.returncode == 0, rec.err
    plain = s.plain(stdin=b"hello\nworld\nthe rest\n")
    assert rec.stdout == plain.stdout and rec.out.startswith("'hello\\n' 'world' b"), rec.out
    for stdin in (b"", b"something else\n"):
        rep = s.replay(stdin=stdin)
        assert rep.returncode == 0, rep.err
        assert rep.stdout == rec.stdout, rep.out + rep.err


def test_uncaught_exception_in_a_thread(scenario):
    s = scenario("""
import threading, random
def worker():
    raise ValueError("boom %.3f" % random.random())
t = threading.Thread(target=worker)
t.start(); t.join()
print("done", random.random())
""")
    rec = assert_faithful(s)
    assert "ValueError: boom" in rec.err and 'raise ValueError("boom' in rec.err, rec.err


def test_logging_relative_created(scenario):
    s = scenario("""
import logging, sys, time
logging.basicConfig(stream=sys.stdout, format="%(relativeCreated)d %(message)s")
time.sleep(0.01)
logging.warning("hello")
""")
    rec = s.record()
    assert rec.returncode == 0, rec.err
    assert int(rec.out.split()[0]) >= 10, rec.out     # from our start, not the runtime's import
    for _ in range(2):
        rep = s.replay()
        assert rep.returncode == 0 and rep.stdout == rec.stdout, rep.out + rep.err
