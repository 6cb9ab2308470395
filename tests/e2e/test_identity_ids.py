"""id() and the default reprs (objects, functions, generators) are the same
on replay as recorded (C++ backend: per-thread counters, like the identity
hashes); sorting by id() replays."""
import pytest

from retrace_testing import assert_faithful


@pytest.fixture(autouse=True)
def _needs_cpp():
    from retracesoftware import utils
    if utils.BACKEND != "cpp":
        pytest.skip("deterministic ids need the C++ backend (the Python backend warns: [no-identity-hash])")


def test_ids_and_default_reprs_replay(scenario):
    s = scenario("""
        import threading

        class Foo:
            pass

        class Slotted:
            __slots__ = ("x", "__weakref__")

        def f():
            pass

        def gen():
            yield 1

        async def coro():
            pass

        objs = [Foo() for _ in range(5)] + [Slotted()]
        print(hex(id(objs[0])), repr(objs[1]), object.__repr__(objs[2]))
        print(repr(f), repr(lambda: 0), f.__repr__ is not None)
        g = gen(); c = coro()
        print(repr(g), repr(c))
        c.close()
        print([objs.index(o) for o in sorted(objs, key=id)])
        print(len({id(o) for o in objs}))

        class WithSuper:
            def __repr__(self):
                return "WithSuper:" + super().__repr__()
        print(WithSuper())

        out = []
        def worker():
            out.append(repr(Foo()))
        t = threading.Thread(target=worker); t.start(); t.join()
        print(out)
    """)
    rec = assert_faithful(s, replays=2)
    assert b"<__main__.Foo object at 0x7e" in rec.stdout, rec.out
    assert b"<function f at 0x7e" in rec.stdout, rec.out


def test_sorted_by_id_changes_program_flow(scenario):
    """Control flow that depends on ids (the order of a sort by id decides
    which clock is read) replays."""
    s = scenario("""
        import random, time

        class Job:
            def __init__(self, name):
                self.name = name

        jobs = [Job(n) for n in "abcdef"]
        random.shuffle(jobs)
        for job in sorted(jobs, key=id)[:3]:
            print(job.name, job)
    """)
    assert_faithful(s)
