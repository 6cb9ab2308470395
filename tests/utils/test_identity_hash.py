import gc
import subprocess
import sys
import textwrap
import weakref

import pytest

from .conftest import load_backend


class Plain:
    pass


def test_identity_hash_stable_and_distinct(u):
    a, b = Plain(), Plain()
    ha, hb = u.identity_hash(a), u.identity_hash(b)
    assert ha != hb
    assert u.identity_hash(a) == ha
    assert ha != -1 and ha >= 0


def test_entry_dies_with_object(u):
    a = Plain()
    u.identity_hash(a)
    r = weakref.ref(a)
    del a
    gc.collect()
    assert r() is None


def test_non_weakrefable_gets_address_hash(u):
    # a C type that frees its instances itself: no way to forget one
    o = iter(())
    assert u.identity_hash(o) == object.__hash__(o)


def test_bare_objects_get_counter_hashes_forgotten_on_dealloc():
    # object() and __slots__ instances cannot be weakly referenced but are
    # freed through object's tp_dealloc, which forgets them
    load_backend("cpp")
    code = textwrap.dedent("""
        import retracesoftware.utils._utils as u
        class S:
            __slots__ = ("a",)
        before, sbefore = object(), S()
        d = {before: 1}
        inner = {(before, 2): 3}             # behind an untracked tuple
        st = {sbefore}
        u.set_identity_hashing(True)
        assert d[before] == 1 and inner[(before, 2)] == 3 and sbefore in st   # snapshotted
        assert hash(before) == object.__hash__(before)
        o = object()
        h = hash(o)
        assert h == u.identity_hash(o) == object.__hash__(o) != id(o) >> 4
        s = S()
        assert hash(s) == u.identity_hash(s)
        hashes = {hash(object()) for _ in range(100)}   # each freed (and forgotten) at once
        assert len(hashes) == 100
        u.set_identity_hashing(False)
        assert u.identity_hash(o) == h       # its entry lives as long as it does
        print("ok")
    """)
    assert run(code).stdout.strip() == "ok"


def test_refcounts(u):
    a = Plain()
    before = sys.getrefcount(a)
    for _ in range(50):
        u.identity_hash(a)
    assert sys.getrefcount(a) == before


def test_python_backend_refuses_global_switch():
    py = load_backend("python")
    with pytest.raises(NotImplementedError):
        py.set_identity_hashing(True)
    assert py.identity_hashing_enabled() is False


ORDER_PROGRAM = textwrap.dedent("""
    import sys
    import retracesoftware.utils._utils as u
    padding = [bytearray(int(sys.argv[1])) for _ in range(int(sys.argv[2]))]  # shift the heap layout
    class Plain:
        def __init__(self, n): self.n = n
    shift = [Plain(-1) for _ in range(int(sys.argv[2]))]  # same size class: shifts the objects below
    u.set_identity_hashing(True)
    objs = [Plain(i) for i in range(40)]
    s = set(objs)
    print([o.n for o in s], [hash(o) == object.__hash__(o) for o in objs[:3]], file=sys.stdout)
    print(sorted(id(o) for o in objs)[:2], file=sys.stderr)
""")


def run(code, *argv):
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)


def test_set_order_is_deterministic_across_processes():
    load_backend("cpp")
    a = run(ORDER_PROGRAM, "100", "3")
    b = run(ORDER_PROGRAM, "5000", "57")
    assert a.stderr != b.stderr  # the id() layouts really differ
    assert a.stdout == b.stdout
    assert "[True, True, True]" in a.stdout


def test_set_order_differs_without_it():
    load_backend("cpp")
    code = ORDER_PROGRAM.replace("u.set_identity_hashing(True)", "pass")
    outs = {run(code, str(100 + 997 * i), str(3 + 5 * i)).stdout for i in range(4)}
    assert len(outs) > 1  # proves the test above can fail


def test_switch_on_off_in_process():
    u = load_backend("cpp")
    code = textwrap.dedent("""
        import gc
        import retracesoftware.utils._utils as u
        class A: pass
        before = A()
        d = {before: 1}
        fn = lambda: 0
        u.set_identity_hashing(True)
        assert u.identity_hashing_enabled()
        assert d[before] == 1             # snapshotted: still found
        a = A()
        h = hash(a)
        assert h == u.identity_hash(a) == object.__hash__(a)
        class B: pass                      # created while on
        b = B()
        assert hash(b) == u.identity_hash(b)
        assert hash(fn) == object.__hash__(fn)
        u.set_identity_hashing(False)
        assert not u.identity_hashing_enabled()
        x = A()
        assert hash(x) == object.__hash__(x) != u.identity_hash(x)  # address hash again
        gc.collect()
        print("ok")
    """)
    assert run(code).stdout.strip() == "ok"
    assert not u.identity_hashing_enabled()


def test_shutdown_with_hashing_on():
    load_backend("cpp")
    code = textwrap.dedent("""
        import gc, retracesoftware.utils._utils as u
        u.set_identity_hashing(True)
        class A: pass
        keep = {A(): i for i in range(1000)}
        cyc = [A() for _ in range(100)]
        for x in cyc: x.me = x; hash(x)
        del cyc; gc.collect()
        print("ok")
    """)
    assert run(code).stdout.strip() == "ok"


def test_a_restarted_session_skips_the_ids_live_objects_hold():
    # pytest --retrace restarts the counters for each pass; an object of the
    # earlier pass that lives on keeps its id, and a new object must not get
    # it too (copy.deepcopy's memo is keyed by id)
    load_backend("cpp")
    code = textwrap.dedent("""
        import gc
        import retracesoftware.utils._utils as u
        gate = u.Gate()
        gate.phase = u.INTERNAL
        tid = lambda: 0
        class A: pass
        class S:
            __slots__ = ()
        def one_pass():
            u.set_identity_hashing(True, gate=gate, thread_id=tid)
            return [u.identity_id(x) for x in (A(), A(), S(), A())]
        u.set_identity_hashing(True, gate=gate, thread_id=tid)
        u.set_identity_ids(True)
        first = one_pass()          # all freed at once: nothing held
        second = one_pass()
        assert first == second, (first, second)   # the same ids again
        u.set_identity_hashing(True, gate=gate, thread_id=tid)    # counters restart
        kept = [A(), S()]
        held = [u.identity_id(x) for x in kept]
        assert held == first[:2]
        u.set_identity_hashing(True, gate=gate, thread_id=tid)    # and again: kept lives on
        fresh = [A(), A(), S(), A()]
        ids = [u.identity_id(x) for x in fresh]
        assert not set(ids) & set(held), (ids, held)
        assert ids == first[2:] + [first[3] + 0x10, first[3] + 0x20], (ids, first)
        del kept
        gc.collect()
        u.set_identity_hashing(True, gate=gate, thread_id=tid)    # kept's ids are free again
        again = A()
        assert u.identity_id(again) == held[0]
        u.set_identity_ids(False)
        u.set_identity_hashing(False)
        print("ok")
    """)
    assert run(code).stdout.strip() == "ok"


def test_keep_live_ids_keep_their_addresses():
    # ids switched on in a process whose ids were already taken (pytest
    # --retrace): every object alive then, static types included, keeps its
    # address; objects made later get counter ids in program code
    load_backend("cpp")
    code = textwrap.dedent("""
        import datetime
        import retracesoftware.utils._utils as u
        class A: pass
        before = A()
        addresses = [id(x) for x in (before, datetime.datetime, A, u)]
        gate = u.Gate()
        gate.phase = u.INTERNAL
        u.set_identity_hashing(True, gate=gate, thread_id=lambda: 0)
        u.set_identity_ids(True, keep_live=True)
        assert [u.identity_id(x) for x in (before, datetime.datetime, A, u)] == addresses
        after = A()
        assert u.identity_id(after) != id(after)
        assert repr(before).endswith(hex(id(before)) + ">") and "0x7e" in repr(after)
        u.set_identity_ids(False)
        u.set_identity_hashing(False)
        print("ok")
    """)
    assert run(code).stdout.strip() == "ok"


def test_objects_alive_at_switch_on_and_in_no_hash_table_get_counter_hashes():
    """Only an object whose address hash may be stored (a key, or inside
    one) keeps it at switch-on: a set the program makes afterwards of
    objects made before (the stdlib's functions, say) iterates the same way
    whatever the heap layout. Snapshotting every live object gave them
    their address hash, so this order followed the addresses."""
    load_backend("cpp")
    code = ORDER_PROGRAM.replace("u.set_identity_hashing(True)\nobjs = [Plain(i) for i in range(40)]\n",
                                 "objs = [Plain(i) for i in range(40)]\nu.set_identity_hashing(True)\n")
    assert code != ORDER_PROGRAM
    outs = {run(code, str(100 + 997 * i), str(3 + 5 * i)).stdout for i in range(4)}
    assert len(outs) == 1, outs
    assert "[True, True, True]" in outs.pop()


def test_hash_tables_made_before_switch_on_still_find_their_keys():
    """Keys stored before switch-on keep the hash they were stored with:
    dict keys and set members, inside tuple keys, weakly keyed entries,
    the fields a key's own __hash__ combines, a bare object() key of a dict
    the collector does not track, lru_cache arguments."""
    load_backend("cpp")
    code = textwrap.dedent("""
        import dataclasses, functools, gc, weakref
        import retracesoftware.utils._utils as u
        class A: pass
        class Slots:
            __slots__ = ("x",)
        @dataclasses.dataclass(frozen=True)
        class Key:
            part: object
        a, b, c, d, e, f, g = (A() for _ in range(7))
        sentinel = object()
        slot = Slots()
        plain = {a: "dict"}
        members = {b}
        tuples = {(1, (c, "x")): "tuple"}
        weak_keys = weakref.WeakKeyDictionary({d: "weak"})
        weak_set = weakref.WeakSet([e])
        fields = {Key(f): "field"}
        atoms = {sentinel: 1}              # only atoms: the collector does not track it
        assert not gc.is_tracked(atoms)
        slots = {slot: 2}
        calls = []
        @functools.lru_cache(maxsize=None)
        def cached(x):
            calls.append(x)
            return 1
        cached(g)
        u.set_identity_hashing(True)
        assert plain[a] == "dict" and b in members and tuples[(1, (c, "x"))] == "tuple"
        assert weak_keys[d] == "weak" and e in weak_set and fields[Key(f)] == "field"
        assert atoms[sentinel] == 1 and slots[slot] == 2
        cached(g)
        assert calls == [g]
        print("ok")
    """)
    assert run(code).stdout.strip() == "ok"
