"""``pytest --retrace`` with an asyncio loop a fixture made before the
recording, serving sockets the test makes (aiofiles' test_simple,
test_concurrency): each pass gives the loop a selector and self-pipe of its
own, made in the pass, so what its epoll reports is recorded and replayed.
Before, the loop's live epoll was asked about the replay's sockets (recorded
descriptor numbers, not open here) and the replay diverged at the server's
first call after it ("got end of replay")."""
from __future__ import annotations

import sys
from pathlib import Path

from retrace_testing import run

TEST = """\
import asyncio
import os

import pytest


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def test_serve_a_file_from_the_fixtures_loop(loop, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(16))

    async def serve(reader, writer):
        data = await loop.run_in_executor(None, path.read_bytes)
        writer.write(data)
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()
        return got

    assert loop.run_until_complete(main()) == path.read_bytes()


def test_the_loop_is_its_own_again(loop):
    # after the passes the fixture's loop runs plainly on its own selector
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
"""


def test_a_fixtures_loop_serves_sockets_made_in_the_test(tmp_path: Path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (project / "test_serve.py").write_text(TEST)
    result = run([sys.executable, "-m", "pytest", "-q", "-rA", "--retrace"], project, timeout=300)
    assert result.returncode == 0, result.out + result.err
    assert "2 passed" in result.out, result.out


RACE = """\
import asyncio
import concurrent.futures
import time

import pytest


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_executor_callbacks_while_timers_run(loop):
    def spin(_):
        # pure Python in the worker thread between its last event and the
        # call_soon_threadsafe of the wrapped future (its callback, added after)
        total = 0
        for i in range(300000):
            total += i

    async def ticker():
        while not done:
            await asyncio.sleep(0.0001)

    async def main():
        nonlocal done
        t = asyncio.ensure_future(ticker())
        got = []
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            for i in range(5):
                cf = pool.submit(time.monotonic)
                cf.add_done_callback(spin)
                got.append(await asyncio.wrap_future(cf, loop=loop) > 0)
        done = True
        await t
        return got

    done = False
    assert loop.run_until_complete(main()) == [True] * 5
"""


def test_a_fixtures_loop_orders_other_threads_callbacks(tmp_path: Path):
    """The fixture's loop's ready queue, in each pass, is the pass's
    recorded-order queue (appends and the loop's emptiness checks under
    one recorded lock). Before, with its plain deque, whether the worker's
    ``call_soon_threadsafe`` append came before the loop's ``if
    self._ready`` was a data race between events: the replay, whose
    replayed polls return at once, reached that check while the worker
    still ran its done-callback and diverged (``time.monotonic()`` or
    ``epoll.poll`` with another timeout, aiofiles' test_slow_file) — 3 of 3
    runs before the change."""
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (project / "test_race.py").write_text(RACE)
    result = run([sys.executable, "-m", "pytest", "-q", "-rA", "--retrace"], project, timeout=300)
    assert result.returncode == 0, result.out + result.err
    assert "1 passed" in result.out, result.out


LEFT = """\
import asyncio
import time

import pytest


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_leaves_a_task_running(loop):
    async def tick():
        while True:
            await asyncio.sleep(0.001)
            time.time()

    async def main():
        asyncio.ensure_future(tick())
        for _ in range(20):
            await asyncio.sleep(0.001)

    loop.run_until_complete(main())


def test_the_loop_is_idle_again(loop):
    assert not asyncio.all_tasks(loop)
"""


def test_tasks_a_run_leaves_on_a_fixtures_loop_end_with_the_run(tmp_path: Path):
    """Tasks a run left pending on the fixture's loop are cancelled and
    finished at the end of that run (inside the pass), as ``asyncio.run``
    does, and each run starts with the loop's queues as they were before the
    first run. Before, the first run's ticker ran in the recording and the
    recording's in the replay (other timers, due at other times): the
    replay diverged at once ("expected a sync point ..., got call
    time.monotonic()"), 3 of 3 runs; aiofiles' test_slow_file (its spam
    client) failed so about one run in three."""
    project = tmp_path / "p"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (project / "test_left.py").write_text(LEFT)
    result = run([sys.executable, "-m", "pytest", "-q", "-rA", "--retrace"], project, timeout=300)
    assert result.returncode == 0, result.out + result.err
    assert "2 passed" in result.out, result.out
