"""Memory shared with recorded children (multiprocessing Value/Array,
written by 'spawn' children) reads as recorded in the replayed parent;
numpy's clock-based values are covered or visibly skipped."""
import pytest

from retrace_testing import assert_faithful


@pytest.mark.slow
def test_value_incremented_by_spawn_children(scenario):
    s = scenario("""
        import multiprocessing as mp, random

        def work(v, a, n):
            for _ in range(n):
                with v.get_lock():
                    v.value += 1
            a[0] = n
            a[1:3] = [n + 1, n + 2]

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            v = ctx.Value("i", 0)
            a = ctx.Array("i", 3)
            s = ctx.Array("c", 8)
            n = random.randrange(1, 50)
            ps = [ctx.Process(target=work, args=(v, a, n)) for _ in range(2)]
            for p in ps: p.start()
            for p in ps: p.join()
            print("n", n, "value", v.value, "array", a[:], a[0], len(a), s.value)
    """)
    assert_faithful(s)


@pytest.mark.slow
def test_shared_memory_block_written_by_spawn_children(scenario):
    # SharedMemory.buf read (slices, bytes(), a memoryview kept from
    # before) after the children that wrote it were joined.
    s = scenario("""
        import multiprocessing as mp, random
        from multiprocessing import shared_memory

        def work(name, k, n):
            shm = shared_memory.SharedMemory(name=name)
            shm.buf[k] = n + k
            shm.buf[8 + k * 4:12 + k * 4] = (n * (k + 1)).to_bytes(4, "little")
            shm.close()

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            shm = shared_memory.SharedMemory(create=True, size=32)
            view = shm.buf
            n = random.randrange(1, 100)
            ps = [ctx.Process(target=work, args=(shm.name, k, n)) for k in range(2)]
            for p in ps: p.start()
            for p in ps: p.join()
            print("n", n, "bytes", bytes(shm.buf[:2]), "kept view", view[0], view[1],
                  [int.from_bytes(view[8 + k * 4:12 + k * 4], "little") for k in range(2)])
            del view
            shm.close()
            shm.unlink()
    """)
    assert_faithful(s)


@pytest.mark.slow
def test_raw_value_and_array_written_by_spawn_children(scenario):
    s = scenario("""
        import multiprocessing as mp, random
        from multiprocessing import sharedctypes

        def work(v, a, n):
            v.value = n
            for i in range(len(a)):
                a[i] = n * i

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            v = sharedctypes.RawValue("i", 0)
            a = sharedctypes.RawArray("d", 4)
            n = random.randrange(1, 100)
            p = ctx.Process(target=work, args=(v, a, n))
            p.start()
            p.join()
            print("n", n, "value", v.value, "array", list(a), bytes(a)[:8].hex())
    """)
    assert_faithful(s)
