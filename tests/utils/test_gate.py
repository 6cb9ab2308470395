import threading

import pytest


def test_constants(u):
    assert (u.DISABLED, u.INTERNAL, u.EXTERNAL) == (0, 1, 2)


def test_default_phase_is_disabled(u):
    assert u.Gate().phase == u.DISABLED


def test_set_get_swap(u):
    g = u.Gate()
    g.phase = u.INTERNAL
    assert g.phase == u.INTERNAL
    assert g.swap(u.EXTERNAL) == u.INTERNAL
    assert g.phase == u.EXTERNAL


def test_gates_are_independent(u):
    gates = [u.Gate() for _ in range(50)]
    for i, g in enumerate(gates):
        g.phase = i % 3
    assert [g.phase for g in gates] == [i % 3 for i in range(50)]


def test_bad_phase_rejected(u):
    g = u.Gate()
    with pytest.raises(ValueError):
        g.phase = 3
    with pytest.raises(ValueError):
        g.swap(-1)
    with pytest.raises(TypeError):
        g.phase = "internal"
    assert g.phase == u.DISABLED


def test_new_gate_after_free_reads_disabled(u):
    # A freed gate's per-thread slot may be reused: the new gate must not
    # inherit the old one's phase in any thread.
    for _ in range(20):
        g = u.Gate()
        g.phase = u.EXTERNAL
        del g
        assert u.Gate().phase == u.DISABLED


def test_phase_is_per_thread(u):
    g = u.Gate()
    g.phase = u.INTERNAL
    barrier = threading.Barrier(4)
    seen = {}

    def worker(i):
        first = g.phase
        g.phase = (i % 2) + 1
        barrier.wait()  # every thread has set its own phase
        seen[i] = (first, g.phase)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {i: (u.DISABLED, (i % 2) + 1) for i in range(4)}
    assert g.phase == u.INTERNAL


def test_many_gates_many_threads(u):
    gates = [u.Gate() for _ in range(40)]
    barrier = threading.Barrier(6)
    results = {}

    def worker(t):
        for k, g in enumerate(gates):
            g.phase = (t + k) % 3
        barrier.wait()
        results[t] = [g.phase for g in gates]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in range(6):
        assert results[t] == [(t + k) % 3 for k in range(40)]
    assert all(g.phase == u.DISABLED for g in gates)


def test_using_restores(u):
    g = u.Gate()
    g.phase = u.EXTERNAL
    with g.using(u.INTERNAL):
        assert g.phase == u.INTERNAL
    assert g.phase == u.EXTERNAL
    with pytest.raises(KeyError):
        with g.using(u.DISABLED):
            assert g.phase == u.DISABLED
            raise KeyError("x")
    assert g.phase == u.EXTERNAL


def test_call_sets_and_restores(u):
    g = u.Gate()
    g.phase = u.INTERNAL
    assert g.call(u.EXTERNAL, lambda a, b=0: (g.phase, a, b), 1, b=2) == (u.EXTERNAL, 1, 2)
    assert g.phase == u.INTERNAL

    def boom():
        assert g.phase == u.DISABLED
        raise OSError("boom")

    with pytest.raises(OSError, match="boom"):
        g.call(u.DISABLED, boom)
    assert g.phase == u.INTERNAL


def test_call_refcounts(u):
    import sys

    g = u.Gate()
    arg = object()
    fn = lambda x: x  # noqa: E731
    before = (sys.getrefcount(arg), sys.getrefcount(fn))
    for _ in range(100):
        assert g.call(u.EXTERNAL, fn, arg) is arg
    assert (sys.getrefcount(arg), sys.getrefcount(fn)) == before

    def bad(x):
        raise ValueError(x)

    b = sys.getrefcount(arg)
    for _ in range(100):
        with pytest.raises(ValueError):
            g.call(u.EXTERNAL, bad, arg)
    assert sys.getrefcount(arg) == b
