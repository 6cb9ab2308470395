"""Async frameworks beyond asyncio (issue 19)."""
import os

import pytest

from retrace_testing import assert_faithful, require


# With the pure-Python backend (every Python version; seen in CI on 3.11
# and, under load, on 3.12) the replay may diverge at trio's epoll.modify in
# a cancel: trio's CancelStatus keeps its tasks and children in sets of plain
# objects, whose iteration order follows their addresses (id-based hash), and
# the replay process allocates differently from the recorded one, so the
# aborts run in another order (another fd first: the argument fingerprint
# differs). Deterministic identity hashing (tests/e2e/test_identity_hash.py)
# exists only in the C++ utils backend. Not a thread-replay problem.
@pytest.mark.xfail(os.environ.get("RETRACE_BACKEND") == "python", strict=False,
                   reason="Python backend: no identity hashing, trio's sets of tasks iterate in address order")
def test_trio_nursery_with_sockets(scenario):
    require("trio")
    s = scenario("""
        import random, trio
        async def echo_server(stream):
            data = await stream.receive_some(100)
            await stream.send_all(data.upper())
        async def main():
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(trio.serve_tcp, echo_server, 0)
                port = listeners[0].socket.getsockname()[1]
                for i in range(2):
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    await stream.send_all(f"hello {i} {random.random()}".encode())
                    print((await stream.receive_some(100)).decode())
                    await stream.aclose()
                await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        trio.run(main)
    """)
    assert_faithful(s)


def test_anyio_on_asyncio_task_group(scenario):
    require("anyio")
    s = scenario("""
        import random, anyio
        results = []
        async def work(i):
            await anyio.sleep(random.random() / 100)
            results.append((i, random.random()))
        async def main():
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(work, i)
            print(sorted(results))
        anyio.run(main)
    """)
    assert_faithful(s)
