"""Ways real applications and their libraries use the runtime's substitutes
and the interpreter, each recorded through the CLI and replayed byte for
byte (issue 19). Library-specific scenarios live in tests/compat/."""
from retrace_testing import assert_faithful


def test_substitutes_behave_like_the_builtins_they_replace(scenario):
    # werkzeug/Flask: `lock_class = threading.Lock` as a class attribute;
    # a recorded builtin (time.time, os.getpid, open) stored in a class
    # must not bind self either; isinstance, issubclass, pickle and copy
    # see what they see without us.
    s = scenario("""
        import _thread, copy, os, pickle, random, threading, time
        class A:
            lock_class = threading.Lock
            rlock_class = _thread.RLock
            now = time.time
            pid = os.getpid
            opener = open
        a = A()
        lock = a.lock_class()
        with lock:
            print("locked", lock.locked())
        r = a.rlock_class()
        with r:
            print("rlock", isinstance(r, _thread.RLock), issubclass(type(r), _thread.RLock))
        print(isinstance(lock, type(threading.Lock())))
        print(pickle.loads(pickle.dumps(threading.Lock)) is threading.Lock,
              pickle.loads(pickle.dumps(time.time)) is time.time,
              pickle.loads(pickle.dumps(open)) is open)
        print(copy.deepcopy(time.time) is time.time, time.time.__name__, open.__name__,
              threading.Lock.__name__)
        for obj in (lock, r):
            try:
                pickle.dumps(obj)
            except TypeError as exc:
                print("TypeError", exc)
        print(type(a.now()).__name__, type(a.pid()).__name__)
        with a.opener(__file__) as fh:
            print(len(fh.read()))
        print(random.random(), a.now())
    """)
    rec = assert_faithful(s)
    assert b"locked True" in rec.stdout and b"rlock True True" in rec.stdout
    assert b"True True True" in rec.stdout
    assert b"cannot pickle '_thread.lock' object" in rec.stdout


def test_scans_never_evaluate_lazy_objects(scenario):
    # Celery's `current_app` and Django's `settings` are lazy proxies: any
    # isinstance()/getattr() on them runs their code. The installer's scans
    # of module namespaces (at start and after each import) must not.
    s = scenario("""
        import random, sys, types
        class Lazy:
            @property
            def __class__(self):
                print("EVALUATED __class__")
                raise ImportError("cannot import name 'current_app'")
            def __getattr__(self, name):
                print("EVALUATED", name)
                raise ImportError("cannot import name 'current_app'")
        lazy = types.ModuleType("lazy_settings")
        lazy.current_app = Lazy()
        lazy.bound = types.MethodType(len, Lazy())
        sys.modules["lazy_settings"] = lazy
        sys.modules["not_a_module"] = Lazy()
        def uses(default=Lazy()):
            return default
        import json, sqlite3, socket, uuid   # each import scans again
        print("imported", random.random())
    """)
    rec = assert_faithful(s)
    assert b"EVALUATED" not in rec.stdout
