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


def test_objects_our_substitutes_return_pass_the_io_type_checks(scenario):
    # aiofiles dispatches open()'s result with functools.singledispatch on
    # io.FileIO / BufferedReader / TextIOBase ("Unsupported io type" for our
    # raw file); pathlib-style code asks isinstance(entry, os.DirEntry).
    s = scenario("""
        import functools, io, os, random
        wrap = functools.singledispatch(lambda f: "unsupported")
        wrap.register(io.FileIO, lambda f: "raw")
        wrap.register(io.TextIOBase, lambda f: "text")
        wrap.register(io.BufferedReader, lambda f: "reader")
        wrap.register(io.BufferedIOBase, lambda f: "buffered")
        with open("data.bin", "wb", buffering=0) as f:
            print(wrap(f), isinstance(f, io.FileIO), isinstance(f, io.RawIOBase), f.write(b"x" * 5))
        for mode in ("rb", "r", "r+b", "ab"):
            with open("data.bin", mode) as f:
                raw = f.buffer.raw if mode == "r" else f.raw
                print(mode, wrap(f), wrap(raw), isinstance(raw, io.FileIO), repr(raw)[:12])
        print([isinstance(e, os.DirEntry) for e in os.scandir(".") if e.name == "data.bin"])
        print(random.random())
    """)
    plain = s.plain()
    rec = assert_faithful(s)
    assert rec.stdout.splitlines()[:-1] == plain.stdout.splitlines()[:-1], (rec.out, plain.out)
    assert b"raw True True 5" in rec.stdout and b"rb reader raw True" in rec.stdout, rec.out


def test_a_patch_on_the_lock_type_is_what_the_programs_locks_call(scenario):
    # blockbuster patches _thread.LockType.acquire (setattr, or
    # forbiddenfruit's write into the type's dict when setattr refuses) to
    # raise on a blocking acquire in async code; the locks the program
    # makes must call the patch, and the patch's call of the type's own
    # acquire must work, as for the real lock type.
    s = scenario("""
        import _thread, ctypes, gc, pickle, random, threading
        def curse(cls, name, value):
            try:
                setattr(cls, name, value)
            except TypeError:
                gc.get_referents(cls.__dict__)[0][name] = value
                ctypes.pythonapi.PyType_Modified(ctypes.py_object(cls))
        lock = threading.Lock()
        print(type(lock) is _thread.LockType, isinstance(lock, _thread.LockType),
              threading.Lock is _thread.LockType, repr(_thread.LockType))
        original = _thread.LockType.acquire
        calls = []
        def acquire(self, *args, **kwargs):
            calls.append(args)
            if args == (True, 7):
                raise RuntimeError("blocking call to lock.acquire")
            return original(self, *args, **kwargs)
        curse(_thread.LockType, "acquire", acquire)
        print(lock.acquire(), lock.acquire(False), calls)
        try:
            lock.acquire(True, 7)
        except RuntimeError as exc:
            print(exc)
        lock.release()
        with threading.Lock():
            print("with", len(calls))
        cond = threading.Condition(threading.Lock())
        with cond:
            cond.notify()
        curse(_thread.LockType, "acquire", original)
        print(lock.acquire(), len(calls))
        try:
            print(_thread.LockType() is not None)
        except TypeError as exc:
            print("TypeError", exc)
        print(random.random())
    """)
    plain = s.plain()
    rec = assert_faithful(s)
    assert rec.stdout.splitlines()[:-1] == plain.stdout.splitlines()[:-1], (rec.out, plain.out)
    assert b"True False [(), (False,)]" in rec.stdout and b"with 3" in rec.stdout, rec.out


def test_a_traceback_repr_replays(scenario):
    # pytest's long failure report prints a traceback argument's repr
    # (urllib3's Retry.increment(_stacktrace=<traceback object at 0x...>)):
    # a traceback has no weak references, so its id is forgotten when it
    # is freed (C++ backend, like bare object()s).
    from retracesoftware import utils
    if utils.BACKEND != "cpp":
        import pytest
        pytest.skip("deterministic ids need the C++ backend (docs/FIDELITY.md)")
    s = scenario("""
        import random
        def fail():
            1 / 0
        for _ in range(random.randint(1, 3)):
            try:
                fail()
            except ZeroDivisionError as exc:
                tb = exc.__traceback__
            print(repr(tb), repr(tb.tb_next), hex(id(tb)))
    """)
    rec = assert_faithful(s, replays=2)
    assert b"<traceback object at 0x7e" in rec.stdout, rec.out


def test_functions_held_in_static_methods_are_recorded(scenario):
    # PYVERSIONS: 3.13's Path.glob lists directories with
    # glob._StringGlobber.scandir = staticmethod(os.scandir), taken when glob
    # was imported: it ran live, so a replay where the directory is gone
    # (pytest's conftest search in another checkout) globbed nothing.
    import shutil
    s = scenario("""
        import os, pathlib, random, shutil
        shutil.rmtree("d", ignore_errors=True)
        os.makedirs("d")
        for n in random.sample(range(100), 3):
            open(f"d/test_{n}.txt", "w").close()
        print(sorted(p.name for p in pathlib.Path("d").glob("test_*")))
        print(sorted(os.path.basename(p) for p in __import__("glob").glob("d/test_*")))
    """)
    rec = assert_faithful(s, before_replay=lambda: shutil.rmtree(s.dir / "d"))
    assert rec.stdout.count(b"test_") == 6, rec.out


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


def test_setters_of_patched_types_are_boundary_calls(scenario):
    # Django sets `conn.isolation_level` on its sqlite connection: on replay
    # the connection behind it was never opened, so the set is replayed,
    # not run.
    s = scenario("""
        import random, sqlite3
        conn = sqlite3.connect(":memory:")
        conn.isolation_level = None
        print(conn.isolation_level)
        conn.row_factory = sqlite3.Row
        conn.execute("create table t(x)")
        conn.execute("insert into t values (?)", (random.random(),))
        print([tuple(r) for r in conn.execute("select x from t")])
        conn.isolation_level = "DEFERRED"
        print(conn.isolation_level, conn.in_transaction)
        try:
            del conn.isolation_level
        except (AttributeError, TypeError) as exc:
            print(type(exc).__name__)
    """)
    assert_faithful(s)


def test_runtime_work_is_invisible_to_program_patches_of_os(scenario):
    # blockbuster wraps os.read/os.stat… to report blocking calls; our
    # open(), scandir and subprocess handling (record and replay) must not
    # call through the program's patches where a plain run would not.
    s = scenario("""
        import os, random, subprocess, sys
        seen = []
        def spy(name, real):
            def call(*args, **kwargs):
                seen.append(name)
                return real(*args, **kwargs)
            return call
        for name in ("read", "stat", "lstat", "open", "fstat", "lseek", "close", "write"):
            setattr(os, name, spy(name, getattr(os, name)))
        with open(__file__) as fh:
            fh.read()
        with open("out.txt", "w") as fh:
            fh.write("x")
        print("open:", sorted(set(seen))); seen.clear()
        print([e.name for e in os.scandir(".") if e.is_file() and e.name == "out.txt"])
        print("scandir:", sorted(set(seen))); seen.clear()
        done = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True)
        print("subprocess:", sorted(set(seen)), done.stdout)
        os.path.abspath = spy("abspath", os.path.abspath)
        s_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helper_mod.py")
        seen.clear()
        with open(s_path, "w") as fh:
            fh.write("X = 1\\n")
        seen.clear()
        import helper_mod   # our check of the source it loads
        print("import:", sorted(set(seen)), helper_mod.X)
        print(random.random())
    """)
    rec = assert_faithful(s)
    plain = s.plain()
    assert rec.stdout.splitlines()[:-1] == plain.stdout.splitlines()[:-1], (rec.out, plain.out)


def test_inspect_stack_replays(scenario):
    # inspect.stack()/getmodule stat every module file in sys.modules order,
    # which differs on replay: finding program source is code, not data.
    s = scenario("""
        import inspect, random
        print(len(inspect.stack()) > 0, inspect.getmodule(inspect.currentframe()).__name__, random.random())
    """)
    assert_faithful(s)


def test_pytest_session_with_filterwarnings_error(scenario):
    # pytest marks our distribution's package for assertion rewriting and
    # warns that the CLI already imported it: with `filterwarnings = error`
    # the session stopped at start-up, and every session showed "1 warning".
    s = scenario("""
        import random
        def test_random():
            assert random.random() < 2
        def test_fails_on_purpose():
            assert random.random() > 2
    """, name="test_app.py")
    s.write("pytest.ini", "[pytest]\nfilterwarnings = error\n")
    rec = assert_faithful(s, command=["python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                      "test_app.py"], check_plain_differs=False, expected_code=1)
    assert b"1 failed, 1 passed" in rec.stdout and b"warning" not in rec.stdout, rec.out


def test_module_bodies_run_by_a_loaders_own_exec_are_recorded(scenario):
    # pytest's assertion rewriter and zipimport exec module bodies
    # themselves: what those bodies (and the modules they import) did ran
    # outside the recording, so a module-level random.Random() (trio's
    # scheduler seed, imported from a test module) replayed other values.
    s = scenario("""
        import sys
        sys.path.insert(0, "lib.zip")
        import helper, zipped
        def test_values():
            print("values", helper.rng.random(), zipped.VALUE)
    """, name="test_app.py")
    s.write("helper.py", "import random\nrng = random.Random()\n")
    import zipfile
    with zipfile.ZipFile(s.dir / "lib.zip", "w") as z:
        z.writestr("zipped.py", "import random\nVALUE = random.Random().random()\n")
    rec = assert_faithful(s, command=["python", "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                                      "test_app.py"], check_plain_differs=False)
    assert b"values 0." in rec.stdout and b"1 passed" in rec.stdout, rec.out


def test_user_declared_library_boundary_never_runs_on_replay(scenario):
    # A model download and a heavy inference call, declared external in
    # .retrace/modules/: recorded, and on replay not run at all (nothing
    # on stderr, no side effect), yet the program gets the same values.
    s = scenario("""
        import heavylib
        meta = heavylib.download("m1")
        model = heavylib.Model("m1")
        print(meta, model.predict(3))
    """)
    s.write("heavylib/__init__.py", """
        import random, sys
        class Model:
            def __init__(self, name):
                print("LOADING MODEL", name, file=sys.stderr)
                self.name = name
            def predict(self, x):
                print("RUNNING INFERENCE", file=sys.stderr)
                return [x * random.random(), self.name]
        def download(name):
            print("DOWNLOADING", name, file=sys.stderr)
            open("downloaded.txt", "w").close()
            return {"name": name, "size": random.randrange(10**6)}
    """)
    s.write(".retrace/modules/heavylib.toml", """
        [modules."heavylib"]
        proxy = ["download"]
        [modules."heavylib".types."Model"]
        methods = ["__init__", "predict"]
    """)
    rec = assert_faithful(s, before_replay=lambda: (s.dir / "downloaded.txt").unlink())
    assert b"DOWNLOADING" in rec.stderr and b"RUNNING INFERENCE" in rec.stderr
    rep = s.replay()
    assert rep.stdout == rec.stdout and rep.returncode == 0
    assert b"DOWNLOADING" not in rep.stderr and b"LOADING MODEL" not in rep.stderr
    assert b"RUNNING INFERENCE" not in rep.stderr
    assert not (s.dir / "downloaded.txt").exists()


def test_divergence_report_reaches_the_users_stderr_after_dup2(scenario):
    # pytest's default capture dup2()s temp files onto fds 1 and 2 and
    # replaces sys.stderr: a divergence report written to fd 2 was lost
    # (exit 3, nothing said). Our lines go to a private copy of the fd 2
    # the process was started with.
    s = scenario("""
        import os, random, sys, tempfile
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stderr = open(os.devnull, "w")
        value = random.random()
        print("captured", value, flush=True)
        os.write(2, b"captured stderr\\n")
    """)
    rec = s.record()
    assert rec.returncode == 0 and rec.stdout == b"", rec.err
    rep = s.replay()
    assert rep.returncode == 0, rep.err
    s.script.write_text(s.script.read_text().replace("value = random.random()",
                                                     "value = os.getpid()"))
    rep = s.replay("--force")
    assert rep.returncode == 3, rep.err
    assert "retrace: error: " in rep.err and "getpid" in rep.err, rep.err
