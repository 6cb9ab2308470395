"""asyncio: the event loop's OS-facing parts (selector waits, sockets, clock)."""
import pytest

from stdlib_support import assert_offline_faithful, has_offline

pytestmark = pytest.mark.skipif(not has_offline(), reason="cannot make a network-less namespace (unshare -rn)")


def test_streams_echo_server_and_client(scenario):
    s = scenario("""
        import asyncio, random, os

        async def handle(reader, writer):
            data = await reader.readline()
            writer.write(data.upper() + os.urandom(3).hex().encode() + b"\\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            replies = []
            for i in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"hello {i} {random.random()}\\n".encode())
                await writer.drain()
                replies.append(await reader.readline())
                writer.close()
                await writer.wait_closed()
            await asyncio.sleep(0.01)
            elapsed = loop.time() - t0
            server.close()
            await server.wait_closed()
            return replies, elapsed, port

        replies, elapsed, port = asyncio.run(main())
        for r in replies:
            print(r)
        print(elapsed, port)
    """)
    assert_offline_faithful(s, replays=2)


def test_sleep_gather_and_timeouts(scenario):
    s = scenario("""
        import asyncio, random, time

        async def worker(name, delay):
            start = time.monotonic()
            await asyncio.sleep(delay)
            return name, round(time.monotonic() - start, 6)

        async def main():
            loop = asyncio.get_running_loop()
            delays = [random.uniform(0.001, 0.02) for _ in range(4)]
            done = await asyncio.gather(*(worker(f"w{i}", d) for i, d in enumerate(delays)))
            order = []
            for fut in asyncio.as_completed([worker(f"c{i}", d) for i, d in enumerate(delays)]):
                order.append((await fut)[0])
            try:
                await asyncio.wait_for(asyncio.sleep(5), timeout=0.02)
            except asyncio.TimeoutError:
                order.append("timeout")
            return done, order, loop.time()

        print(asyncio.run(main()))
    """)
    assert_offline_faithful(s, replays=2)


def test_subprocess_exec_and_run_in_executor(scenario):
    s = scenario("""
        import asyncio, sys, os

        def blocking():
            return os.urandom(4).hex()

        async def main():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import random; print(random.random())",
                stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            loop = asyncio.get_running_loop()
            token = await loop.run_in_executor(None, blocking)
            return out.strip(), proc.returncode, token

        print(asyncio.run(main()))
    """)
    assert_offline_faithful(s)
