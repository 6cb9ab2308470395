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
