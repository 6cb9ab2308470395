"""install_for_pytest / pytest --retrace on a small library test suite: each
test runs recorded, then replayed in-process; a replay that diverges fails."""
import json
import os
import signal
import subprocess
import sys
import textwrap

from retrace_testing import _env

CONFTEST = """
from retracesoftware.install import install_for_pytest
install_for_pytest()
"""

SUITE = '''
import os, random, time, uuid, json

RUNS = []

def test_clock_and_random(tmp_path):
    RUNS.append(1)
    stamp = time.time()
    values = [random.random() for _ in range(3)]
    (tmp_path / "out.json").write_text(json.dumps({"t": stamp, "v": values, "id": str(uuid.uuid4())}))
    assert json.loads((tmp_path / "out.json").read_text())["v"] == values

def test_reads_a_file(tmp_path):
    p = tmp_path / "data.txt"
    p.write_text("abc" * 10)
    assert p.read_text().count("abc") == 10

def test_fails_for_real():
    assert random.random() > 2, "this test fails in both runs"

def test_environment():
    assert os.environ.get("HOME") is not None or True

def test_zz_each_test_ran_recorded_then_replayed():
    assert len(RUNS) == EXPECTED_RUNS, RUNS
'''

HIDDEN = '''
import time

def test_depends_on_an_unrecorded_clock(tmp_path):
    # time.time runs unrecorded (configured `disable`): the value differs
    # between the recorded run and the replay, and reaches a boundary call.
    with open(tmp_path / "stamp.txt", "w") as f:
        f.write(repr(time.time()))
'''

OVERRIDE = """
[modules."time"]
disable = ["time"]
"""


def _default_sigint():
    # A shell's background job starts with SIGINT ignored and Python then
    # keeps it so; the suites below check the handler a terminal's Python has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _pytest(cwd, *args, env=None):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(cwd), *args], cwd=cwd, env=_env(env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                          preexec_fn=_default_sigint)
    return proc.returncode, proc.stdout.decode()


def test_sample_suite_under_install_for_pytest(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    # 3 runs: a plain warm-up (caches), the recording, the replay.
    (tmp_path / "test_sample.py").write_text(SUITE.replace("EXPECTED_RUNS", "3"))
    code, out = _pytest(tmp_path)
    assert "1 failed, 4 passed" in out, out
    assert "test_fails_for_real" in out and "this test fails in both runs" in out
    assert "ReplayDivergence" not in out, out


def test_unseen_nondeterminism_is_a_divergence(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_hidden.py").write_text(HIDDEN)
    override = tmp_path / "modules"
    override.mkdir()
    (override / "time.toml").write_text(OVERRIDE)
    code, out = _pytest(tmp_path, env={"RETRACE_MODULES_PATH": str(override)})
    assert code != 0, out
    assert "1 failed" in out, out
    assert "ReplayDivergence" in out and "posix.write" in out, out


def test_pytest_retrace_flag(tmp_path):
    (tmp_path / "test_sample.py").write_text(SUITE.replace("EXPECTED_RUNS", "3"))
    code, out = _pytest(tmp_path, "--retrace")
    assert "1 failed, 4 passed" in out, out
    # Without the flag the plugin stays out of the way: each test runs once.
    (tmp_path / "test_sample.py").write_text(SUITE.replace("EXPECTED_RUNS", "1"))
    code, out = _pytest(tmp_path)
    assert "1 failed, 4 passed" in out, out


SUITE_MORE = '''
import asyncio, random, signal, threading, unittest

RUNS = []
class TestUnittestStyle(unittest.TestCase):
    def setUp(self):
        self.seed = 3

    def test_method_is_recorded_and_replayed(self):
        RUNS.append(random.random() + self.seed)

    def test_zz_it_ran_three_times(self):
        # a plain warm-up, the recording, the replay
        self.assertEqual(len(RUNS), 3)

class TestFreshFixtureForEachRun(unittest.TestCase):
    # tearDown + setUp run between the warm-up, the recording and the replay
    def setUp(self):
        self.items = []

    def test_body_mutates_its_fixture(self):
        self.items.append(random.random())
        self.assertEqual(len(self.items), 1)
        self.assertFalse(hasattr(self, "count"))
        self.count = 1      # set by the body: gone before the next run

def test_asyncio_run_and_signal_handlers():
    async def main():
        await asyncio.sleep(0)
        return random.random()
    asyncio.run(main())
    def handler(signum, frame):
        pass
    previous = signal.signal(signal.SIGUSR1, handler)
    assert signal.getsignal(signal.SIGUSR1) is handler
    assert signal.signal(signal.SIGUSR1, previous) is handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

'''

CONFTEST_CHECK = '''
import json, signal, threading
BEFORE = dict(vars(threading.Thread))

def pytest_sessionfinish(session):
    # Outside every recorded test: nothing of retrace may be left.
    left = sorted(k for k in set(BEFORE) | set(vars(threading.Thread))
                  if BEFORE.get(k) is not vars(threading.Thread).get(k))
    with open("leftovers.json", "w") as f:
        json.dump({"thread_attrs": left,
                   "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler}, f)
'''


SUITE_WARM = '''
import functools, linecache, os

@functools.lru_cache(maxsize=None)
def probe():
    return os.path.exists(__file__)

def test_cache_filled_by_the_first_run():
    # The first run fills the cache with a recorded call; with a plain
    # warm-up run first, the recording and the replay both find it full.
    probe()
    linecache.getline(__file__, 1)
'''


def test_caches_warmed_before_recording(tmp_path):
    (tmp_path / "test_warm.py").write_text(SUITE_WARM)
    code, out = _pytest(tmp_path, "--retrace")
    assert code == 0 and "1 passed" in out, out


def test_unittest_asyncio_signals_and_uninstall(tmp_path):
    (tmp_path / "test_more.py").write_text(SUITE_MORE)
    (tmp_path / "conftest.py").write_text(CONFTEST_CHECK)
    code, out = _pytest(tmp_path, "--retrace")
    assert code == 0 and "4 passed" in out, out
    assert "undo failed" not in out, out
    left = json.loads((tmp_path / "leftovers.json").read_text())
    assert left == {"thread_attrs": [], "sigint_default": True}, left


SUITE_SETS = '''
import random

class Item:
    pass

def test_set_of_plain_objects_orders_alike_on_replay():
    items = []
    for i in range(40):
        item = Item()
        item.n = i
        items.append(item)
    order = [item.n for item in set(items)]
    # The order reaches a boundary call (seeding a Random is recorded).
    random.Random(sum(i * n for i, n in enumerate(order))).random()
'''


def test_set_order_under_retrace(tmp_path):
    from retracesoftware import utils
    if utils.BACKEND != "cpp":
        import pytest
        pytest.skip("identity hashing needs the C++ backend")
    (tmp_path / "test_sets.py").write_text(SUITE_SETS)
    code, out = _pytest(tmp_path, "--retrace")
    assert code == 0 and "1 passed" in out, out
