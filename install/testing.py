"""Library test suites under retrace: each test runs recorded, then is replayed
in-process at once; a replay that diverges fails the test.

Two ways in:

* ``pytest --retrace`` (the plugin in pytest_plugin.py), for every test;
* ``install_for_pytest()`` in a ``conftest.py``, for the tests under that
  conftest's folder.

A test that depends on something the runtime cannot see (an unpatched source
of nondeterminism) is caught when that difference reaches a boundary call
(other arguments, another call) or the test's outcome (passed once, failed
the other time): it is reported as a divergence instead of passing.
"""
from __future__ import annotations

import functools
import inspect
import os
import sys
from collections import deque as _deque

from retracesoftware.utils import DISABLED, INTERNAL
from retracesoftware.utils.errors import ReplayDivergence

# Private references, taken before anything is patched.
_unlink = os.unlink
_mkdir = os.mkdir
_rmdir = os.rmdir
_getpid = os.getpid
_urandom = os.urandom
_modules = sys.modules
_real_id = id   # taken when the plugin loads, before any install

_scopes: list[str] = []
_everywhere = False


def install_for_pytest(path: str | None = None) -> None:
    """Record-and-replay every test under ``path`` (default: the calling conftest's folder)."""
    if path is None:
        caller = inspect.stack()[1].filename
        path = os.path.dirname(os.path.abspath(caller))
    _scopes.append(os.path.abspath(path))


def enable_everywhere() -> None:
    global _everywhere
    _everywhere = True


def applies_to(filename: str) -> bool:
    if _everywhere:
        return True
    filename = os.path.abspath(filename)
    return any(filename == s or filename.startswith(s + os.sep) for s in _scopes)


def _preload_runtime() -> None:
    """Import every module of ours an install imports lazily, and make the
    private linecache, now: a test body that replaced what importlib relies
    on (packaging's ``test_sys_implementation_name`` sets
    ``sys.implementation`` to an object without ``cache_tag``) made the
    next install's first import of one of them fail (AttributeError, an
    error of ours failing the test)."""
    import importlib
    import pkgutil
    import retracesoftware.install as package
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            try:
                importlib.import_module(f"{package.__name__}.{info.name}")
            except Exception:   # an optional part (its dependency missing): imported when used
                pass
    from retracesoftware.install import debugging
    debugging.private_linecache_module()


_sys = sys
_REAL_IMPLEMENTATION = sys.implementation


class _real_implementation:
    """The interpreter's own ``sys.implementation`` while our runtime
    installs and uninstalls: importlib's finders read its ``cache_tag``, and
    a test body may have replaced it (packaging's
    ``test_sys_implementation_name``: the install's imports of ours failed
    with AttributeError). The test's replacement is put back after."""

    def __enter__(self):
        self.replaced = _sys.implementation
        if self.replaced is not _REAL_IMPLEMENTATION:
            _sys.implementation = _REAL_IMPLEMENTATION
        return self

    def __exit__(self, *exc):
        if self.replaced is not _REAL_IMPLEMENTATION:
            _sys.implementation = self.replaced
        return False


class _Outcome:
    def __init__(self, value=None, error=None):
        self.value = value
        self.error = error

    def describe(self) -> str:
        if self.error is None:
            return "passed"
        return f"raised {type(self.error).__name__}: {self.error}"


class TestRunner:
    """Runs one callable recorded, then replayed, through the full install stack."""

    __test__ = False  # not a test class for pytest's collector

    def __init__(self, config=None):
        self._config = config
        from retracesoftware.install.installer import Installer
        Installer.reuse_index = True   # two installs per test: one scan while no module is imported
        self._prepared = False
        #: (nodeid, first run, recorded run) of tests whose first (plain) run
        #: and recorded run ended differently (see record_and_replay)
        self.changed_by_first_run = []

    def config(self):
        if self._config is None:
            from retracesoftware.install.config import load_config
            self._config = load_config()
        return self._config

    def _run(self, system, threads, fn, executors=None):
        from retracesoftware.install.session_base import install_boundary

        with _real_implementation():
            installer, thread_support = install_boundary(system, self.config(), threads)
            if _identity_hashing(system, threads):
                _identity_ids()
            try:
                _children_as_data(system, installer)
            except BaseException:
                installer.uninstall()
                raise
        try:
            gate = system.gate
            previous = gate.swap(INTERNAL)
            try:
                if executors is not None:
                    executors.begin_run(getattr(thread_support, "ReadyQueue", None))    # recorded, then replayed
                try:
                    outcome = _Outcome(value=fn())
                except ReplayDivergence:
                    raise
                except BaseException as exc:  # the test's own failure
                    outcome = _Outcome(error=exc)
                if executors is not None:
                    executors.finish_tasks()  # recorded, then replayed
                    executors.end_of_run()   # recorded, then replayed
            finally:
                gate.phase = previous
            gate.phase = DISABLED
            thread_support.at_exit()   # replay: let other threads use up their events
            system.finish()
            return outcome
        finally:
            with _real_implementation():
                installer.uninstall()
                _stop_leftover_replay_threads(system)

    #: run the test once, plainly, before recording it (see record_and_replay)
    warm_up = True

    def record_and_replay(self, fn, name="test", reset=None):
        """Return the recorded outcome's value, or raise its exception; raise
        ReplayDivergence when the replay does not match.

        With ``warm_up`` the test first runs once with nothing installed (its
        outcome is the test's when the recorded run's differs and replays
        the same: see below): what a first run does once and the process then
        caches (linecache, lazy imports, memoised lookups, a library's
        caches) is done before the recording, so the recording and the
        replay start from the same warm state instead of the replay missing
        the calls the recording made to fill them. *reset* (if given) runs
        between the runs, outside the recording: a unittest test's
        tearDown + setUp, so each run starts from a fresh fixture."""
        from retracesoftware.install.recording_streams import stream_reader, stream_writer
        from retracesoftware.install.thread_support import ThreadRegistry
        from retracesoftware.proxy import System

        if not self._prepared:   # before the first test body runs (not when pytest starts:
            _preload_runtime()   # the plugin's runner is registered in every session)
            self.config()        # (parsing may import tomllib: see _preload_runtime)
            self._prepared = True
        executors = _LoopExecutors()
        first = None
        if self.warm_up:
            try:
                first = _Outcome(value=fn())
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                first = _Outcome(error=exc)
            executors.finish_tasks()
            if reset is not None:
                reset()
        executors.reset()

        states = _StatefulInstances(self.config())
        threads = ThreadRegistry()
        tape = _scratch_tape()
        writer = _PassWriter(stream_writer(tape, {}, thread_id=threads.current, compress=False))
        try:
            recorded = self._run(System("record", writer=writer, thread_id=threads.current), threads, fn,
                                 executors)
        finally:
            writer.close()
        if reset is not None:
            reset()
        states.restore()
        executors.reset()
        threads = ThreadRegistry()
        reader = stream_reader(tape)
        _unlink(tape)
        try:
            replayed = self._run(System("replay", reader=reader, thread_id=threads.current), threads, fn,
                                 executors)
        finally:
            reader.close()
            executors.reset()
        if (recorded.error is None) != (replayed.error is None) or (
                recorded.error is not None and type(recorded.error) is not type(replayed.error)):
            raise ReplayDivergence(
                f"replay of {name} diverged: recorded run {recorded.describe()}, "
                f"replay {replayed.describe()} — the test depends on something retrace does not record")
        if first is not None and (first.error is None) != (recorded.error is None):
            # The replay matched the recording, but the recorded run's
            # outcome is not the first run's: what the first run left
            # behind (a cache filled, a module imported, a module global
            # changed, a warning's once-registry) or the recording's cost
            # (a timed health check) changed it. The first run is the one a
            # plain pytest makes: its outcome is the test's; the difference
            # is reported at the end of the session (never as a warning:
            # suites run with ``-W error``).
            self.changed_by_first_run.append((name, first.describe(), recorded.describe()))
            if first.error is not None:
                raise first.error
            return first.value
        if recorded.error is not None:
            raise recorded.error
        return recorded.value

    def pytest_terminal_summary(self, terminalreporter):
        if not self.changed_by_first_run:
            return
        write = terminalreporter.write_line
        terminalreporter.section("retrace: outcome changed by the first run", sep="-")
        write(f"{len(self.changed_by_first_run)} test(s): the recorded run's outcome differed from the "
              "first (plain) run's and replayed the same; each has the first run's outcome "
              "(what the first run left behind, or the recording's cost, changed the second):")
        def line(text):
            text = (text.splitlines() or [""])[0]
            return text if len(text) <= 160 else text[:157] + "..."
        for name, first, recorded in self.changed_by_first_run:
            write(f"  {name}: first run {line(first)}; recorded run {line(recorded)}")

    # ------------------------------------------------------------- pytest
    def pytest_pyfunc_call(self, pyfuncitem):
        if not applies_to(str(getattr(pyfuncitem, "path", pyfuncitem.fspath))):
            return None
        testfunction = pyfuncitem.obj
        if inspect.iscoroutinefunction(testfunction) or inspect.isasyncgenfunction(testfunction):
            # An async test is run by its plugin (anyio's runs it from this
            # very hook; pytest-asyncio has made it a sync function before
            # we get here). Whichever runs it does so inside the recording:
            # the hook's other implementations are called, record then replay.
            others = pyfuncitem.config.pluginmanager.subset_hook_caller(
                "pytest_pyfunc_call", remove_plugins=[self])
            tmp = _TestTmpDir(pyfuncitem)
            try:
                self.record_and_replay(lambda: others(pyfuncitem=pyfuncitem), name=pyfuncitem.nodeid,
                                       reset=tmp.restore if tmp.path is not None else None)
            finally:
                tmp.discard()
            return True
        funcargs = pyfuncitem.funcargs
        testargs = {arg: funcargs[arg] for arg in pyfuncitem._fixtureinfo.argnames}
        tmp = _TestTmpDir(pyfuncitem)
        try:
            self.record_and_replay(lambda: testfunction(**testargs), name=pyfuncitem.nodeid,
                                   reset=tmp.restore if tmp.path is not None else None)
        except ReplayDivergence as exc:
            shared = _shared_fixtures(pyfuncitem)
            if shared:
                exc.add_note(
                    f"retrace: fixture{'s' if len(shared) > 1 else ''} {', '.join(shared)} "
                    f"{'are' if len(shared) > 1 else 'is'} made once for the test's three runs "
                    "(plain, recorded, replayed): if the test changes one, each run starts from "
                    "what the previous one left (docs/PYTEST.md, Limits)")
            raise
        finally:
            tmp.discard()
        return True


    def pytest_runtest_call(self, item):
        """``unittest.TestCase`` tests (pytest's TestCaseFunction items) do
        not go through ``pytest_pyfunc_call``: the test method itself is
        recorded and replayed (setUp/tearDown run once, around both, like
        fixtures around a function test)."""
        if not _is_unittest_item(item) or not applies_to(str(getattr(item, "path", item.fspath))):
            return
        original = item.obj
        if inspect.iscoroutinefunction(original) or getattr(original, "__retrace_wrapped__", False):
            return  # async test methods run on their own loop: left alone
        runner = self

        testcase = getattr(original, "__self__", None)
        fixture_keys = []

        def reset():
            # A fresh fixture for each run, as unittest would give a new
            # test: tearDown, forget what the body set on self, setUp.
            testcase.tearDown()
            testcase.doCleanups()
            for key in [k for k in vars(testcase) if k not in fixture_keys[0]]:
                delattr(testcase, key)
            testcase.setUp()

        @functools.wraps(original)
        def recorded_and_replayed(*args, **kwargs):
            if testcase is not None:
                fixture_keys[:] = [set(vars(testcase))]   # as setUp left it
            return runner.record_and_replay(lambda: original(*args, **kwargs), name=item.nodeid,
                                            reset=reset if testcase is not None else None)
        recorded_and_replayed.__retrace_wrapped__ = True
        item.obj = recorded_and_replayed


def _shared_fixtures(item) -> list:
    """The function-scoped fixtures of *item* not made by pytest itself
    (tmp_path is restored between runs; monkeypatch, capsys... hold no
    state a test builds on): shared by its three runs."""
    names = []
    try:
        defs = item._fixtureinfo.name2fixturedefs
    except AttributeError:   # pragma: no cover - pytest without it
        return names
    for name in item._fixtureinfo.argnames:
        fixturedefs = defs.get(name) or ()
        if not fixturedefs:
            continue
        fixturedef = fixturedefs[-1]
        module = getattr(getattr(fixturedef, "func", None), "__module__", "") or ""
        if str(getattr(fixturedef, "scope", "")) in ("function", "Scope.Function") \
                and not module.startswith(("_pytest", "pytest")):
            names.append(name)
    return names


class ThreadOutlivedItsTest(RuntimeError):
    """Raised in a thread the test started and left running, in the replay
    pass only, where it waits for events past the end of the test's tape."""


def _stop_leftover_replay_threads(system) -> None:
    """A thread the test left running (its recording and its warm-up copies
    run on live) would wait for its turn on the replay's tape for good, and
    a non-daemon one would hang the process at exit: the replay's copy is
    stopped with ThreadOutlivedItsTest (pytest shows it as an unhandled
    thread exception warning)."""
    seq = getattr(system, "_sequencer", None) if system.mode == "replay" else None
    if seq is not None:
        _quiet_stopped_threads()
        seq.fail(ThreadOutlivedItsTest(
            "retrace: this thread outlived its test's replay and was stopped there "
            "(pytest --retrace: the recorded and plain runs of the thread go on)"))


def _quiet_stopped_threads() -> None:
    """A replay thread stopped at the end of its pass (ThreadOutlivedItsTest,
    or the divergence that ended the pass) ends without a report: pytest's
    thread-exception hook formatted its traceback in that thread while the
    main thread formatted the test's report, and CPython 3.11's AST
    recursion check is per interpreter ("AST constructor recursion depth
    mismatch": an INTERNALERROR that ended the session). The test's outcome
    already says what happened."""
    import threading
    hook = threading.excepthook
    if getattr(hook, "retrace_quiet", False):
        return

    def excepthook(args, /):
        if isinstance(args.exc_value, (ThreadOutlivedItsTest, ReplayDivergence)):
            return None
        return hook(args)
    excepthook.retrace_quiet = True
    excepthook.__wrapped__ = hook
    threading.excepthook = excepthook


class _PassWriter:
    """The stream writer of one record pass. A thread the test started and
    left running may be inside a boundary call when the pass ends: what it
    writes once the tape is closed is dropped (the thread goes on live, as
    the boundary is uninstalled) instead of raising into the test's thread."""

    __slots__ = ("_writer", "write", "bind", "unbind", "flush")

    def __init__(self, writer):
        from retracesoftware.functional import handle
        self._writer = writer
        for name in ("write", "bind", "unbind", "flush"):
            object.__setattr__(self, name, handle(getattr(writer, name), ValueError, self._after_close))

    def _after_close(self, exc):
        if not self._writer.closed:
            raise exc
        return None

    def __getattr__(self, name):
        return getattr(self._writer, name)


class _StatefulInstances:
    """The state of the instances of bound types that exist before a test's
    recording: taken before the record pass, put back before the replay.

    An instance of a type the config binds (``_random.Random``) is bound
    only when made under retrace; one made earlier — by the warm-up run, by
    an earlier test, at import (tempfile's name generator) — runs live in
    both passes. Its state must be where the record pass found it when the
    replay starts, else a replay draws other temp names than the recording.
    Every bound type with ``getstate``/``setstate`` methods is covered."""

    _types_cache = None

    def __init__(self, config):
        import gc
        kinds = self._types(config)
        self.saved = []
        if not kinds:
            return
        # The instances refer to their type (a heap type's instances visit
        # it in tp_traverse): the collector's own walk finds them, with no
        # Python-level loop over the whole heap (that loop was a third of a
        # trivial test's time under --retrace: 0.08 s of 0.31 s).
        for obj in gc.get_referrers(*_subclasses(kinds)):
            if issubclass(type(obj), kinds):   # never obj.__class__: a lazy object would evaluate
                try:
                    self.saved.append((obj, obj.getstate()))
                except Exception:   # an uninitialised or odd subclass: left alone
                    pass

    @classmethod
    def _types(cls, config):
        if cls._types_cache is not None and cls._types_cache[0] is config:
            return cls._types_cache[1]
        import sys
        kinds = []
        for mname, module_config in config.modules.items():
            module = sys.modules.get(mname)
            for tname, tconfig in module_config.types.items():
                if {"getstate", "setstate"} <= set(tconfig.methods):
                    kind = getattr(module, tname, None) if module is not None else None
                    if isinstance(kind, type):
                        kinds.append(kind)
        cls._types_cache = (config, tuple(kinds))
        return cls._types_cache[1]

    def restore(self):
        for obj, state in self.saved:
            try:
                obj.setstate(state)
            except Exception:
                pass


def _subclasses(kinds) -> list:
    seen, todo = [], list(kinds)
    while todo:
        kind = todo.pop()
        if kind in seen:
            continue
        seen.append(kind)
        try:
            todo.extend(type.__subclasses__(kind))
        except TypeError:
            pass
    return seen


#: the asyncio loops of this process, in the order they were made:
#: id -> (number, weak reference) (ids, not hashes: identity hashing is on
#: inside the passes)
_loops: dict = {}
_loop_numbers = [0]


def _known_loops(base) -> list:
    """The live loops (instances of asyncio's ``BaseEventLoop``), oldest
    first. The first call finds the ones already made with one scan of the
    heap and wraps ``BaseEventLoop.__init__`` to note each later one: a
    scan of the heap per test cost about a third of a trivial test's time
    under ``--retrace`` (0.1 s of 0.31 s, cProfile)."""
    import weakref
    if getattr(base.__dict__.get("__init__"), "__retrace_noted__", False) is not True:
        import gc
        original = base.__init__

        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            _note_loop(self, weakref)
        __init__.__retrace_noted__ = True
        __init__.__wrapped__ = original
        __init__.__qualname__ = "BaseEventLoop.__init__"
        base.__init__ = __init__
        for obj in gc.get_objects():
            if issubclass(type(obj), base):   # never obj.__class__: a lazy object would evaluate
                _note_loop(obj, weakref)
    live = []
    for key, (number, ref) in list(_loops.items()):
        loop = ref()
        if loop is None:
            _loops.pop(key, None)
        else:
            live.append((number, loop))
    live.sort(key=lambda item: item[0])
    return [loop for _, loop in live]


def _note_loop(loop, weakref) -> None:
    key = id(loop)
    entry = _loops.get(key)
    if entry is not None and entry[1]() is loop:
        return
    _loop_numbers[0] += 1
    _loops[key] = (_loop_numbers[0], weakref.ref(loop, lambda _, key=key: _loops.pop(key, None)))


class _LoopExecutors:
    """asyncio loops made before a test's recording (a pytest-asyncio
    fixture's loop) and their default executors then.

    ``run_in_executor(None, ...)`` (aiofiles, ``asyncio.to_thread``) makes a
    loop's default thread pool on first use, so the warm-up run would make
    it and the record and replay passes would hand their work to its
    threads, started outside both: unrecorded, they run live, and the
    replay diverges on thread order. After each run the executor the run
    made is shut down (``wait=False``) and the loop gets back the one it
    had, so each pass starts threads of its own: recorded, then replayed
    (`end_of_run` inside each pass, `reset` between runs)."""

    def __init__(self):
        self.loops = []
        #: selector loops whose selector and self-pipe each pass replaces:
        #: loop -> (selector, ssock, csock) from before, while a pass runs
        self.selectors = {}
        #: loops whose ready queue each pass replaces: loop -> its deque
        self.ready = {}
        #: loop -> (ready handles, timer handles) before the test's first run
        self.before = {}
        #: the tasks pending before the test's first run (and their ids)
        self._tasks_before = []
        self.tasks_before = set()
        self._swappable = []
        asyncio = _modules.get("asyncio")
        base = getattr(asyncio, "BaseEventLoop", None)
        if not isinstance(base, type):
            return
        for obj in _known_loops(base):
            if True:
                state = vars(obj)
                self.loops.append((obj, state.get("_default_executor")))
                if self._own_selector_only(obj):
                    self._swappable.append(obj)
                # What the loop holds before the test's first run (kept
                # referenced: the ids stay theirs).
                self.before[obj] = (list(state.get("_ready", ())), list(state.get("_scheduled", ())))
        all_tasks = getattr(asyncio, "all_tasks", None)
        for loop, _ in self.loops:
            try:
                self._tasks_before.extend(all_tasks(loop))
            except Exception:
                pass
        self.tasks_before = {id(t) for t in self._tasks_before}

    @staticmethod
    def _own_selector_only(loop) -> bool:
        """A selector loop, open and idle, whose selector watches nothing but
        its own self-pipe (a fixture's fresh loop): its readiness can be
        given to each pass to make anew."""
        state = vars(loop)
        selector, ssock = state.get("_selector"), state.get("_ssock")
        if selector is None or ssock is None or state.get("_closed") or state.get("_thread_id") is not None:
            return False
        try:
            return len(selector.get_map()) == 1 and selector.get_key(ssock.fileno()) is not None
        except Exception:
            return False

    def begin_run(self, ready_queue=None):
        """At the start of a record or replay pass, inside it: each idle
        selector loop made before the pass gets a selector and self-pipe
        made in the pass. The ones it had are live (made outside any
        recording): what their epoll reported — whether a worker thread's
        ``call_soon_threadsafe`` wake-up had arrived yet — was not recorded,
        so the loop's iterations, and the calls it made, followed real
        timing and the replay diverged. Made in the pass, they are recorded
        and replayed as a loop made by the test would be.

        Each idle loop also gets the pass's ready queue (*ready_queue*,
        install/thread_stdlib.py ``ReadyQueue``: appends and the loop's
        emptiness checks under one recorded lock), as a loop made in the
        pass has. With its plain deque, whether an executor thread's
        ``call_soon_threadsafe`` append came before the loop's ``if
        self._ready`` (select timeout 0, no ``time()`` call) or after was a
        data race between events: aiofiles' test_slow_file replayed
        ``epoll.poll(-1)`` where the record had polled with 0."""
        import selectors
        self._start_state()
        if ready_queue is not None:
            for loop, _ in self.loops:
                state = vars(loop)
                ready = state.get("_ready")
                if (type(ready) is _deque and not state.get("_closed")
                        and state.get("_thread_id") is None):
                    loop._ready = ready_queue(ready)
                    self.ready[loop] = ready
        for loop in self._swappable:
            state = vars(loop)
            if state.get("_closed") or state.get("_selector") is None:
                continue
            self.selectors[loop] = (loop._selector, loop._ssock, loop._csock)
            loop._selector = selectors.DefaultSelector()
            loop._internal_fds -= 1
            loop._make_self_pipe()

    def finish_tasks(self):
        """At the end of each run (the first run plainly, then inside the
        record and the replay pass): the tasks the run made and left
        pending on a loop made before it are cancelled and the loop runs
        until they end, as ``asyncio.run`` does with its own. Left pending,
        they ran in the next run: the first run's leftovers at the start of
        the recording, the recording's at the start of the replay — other
        tasks, other timers, due at other times — and the replay diverged
        at its start (aiofiles' test_slow_file: a spam client's sleep)."""
        asyncio = _modules.get("asyncio")
        all_tasks = getattr(asyncio, "all_tasks", None)
        if all_tasks is None:
            return
        for loop, _ in self.loops:
            state = vars(loop)
            if state.get("_closed") or state.get("_thread_id") is not None:
                continue
            try:
                tasks = [t for t in all_tasks(loop) if id(t) not in self.tasks_before]
            except RuntimeError:
                continue
            if not tasks:
                continue
            # in the order they were made (a set's order is not)
            tasks.sort(key=_task_number)
            for task in tasks:
                task.cancel()
            try:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            except ReplayDivergence:
                raise
            except Exception:
                pass

    def _start_state(self):
        """Each run starts with the loop's queues as they were before the
        test's first run: a handle another run left (a done future's
        callback, a cancelled sleep's timer) is dropped."""
        for loop, (ready, scheduled) in self.before.items():
            state = vars(loop)
            if state.get("_closed") or state.get("_thread_id") is not None:
                continue
            now_ready, now_scheduled = state.get("_ready"), state.get("_scheduled")
            if isinstance(now_ready, _deque):
                keep = {id(h) for h in ready}
                left = [h for h in _deque.__iter__(now_ready) if id(h) in keep]
                if len(left) != _deque.__len__(now_ready):
                    now_ready.clear()
                    now_ready.extend(left)
            if isinstance(now_scheduled, list):
                keep = {id(h) for h in scheduled}
                left = [h for h in now_scheduled if id(h) in keep and not h.cancelled()]
                if len(left) != len(now_scheduled):
                    for h in now_scheduled:
                        if id(h) not in keep:
                            h._scheduled = False
                    import heapq
                    now_scheduled[:] = left
                    heapq.heapify(now_scheduled)
                    loop._timer_cancelled_count = 0

    def _end_ready(self):
        """Each loop gets its plain deque back, holding what the pass's
        queue holds (the pass's lock is not used outside the pass)."""
        for loop, ready in self.ready.items():
            now = vars(loop).get("_ready")
            if now is not ready and isinstance(now, _deque):
                ready.clear()
                ready.extend(_deque.__iter__(now))
            loop._ready = ready
        self.ready = {}

    def _end_selectors(self, close):
        for loop, (selector, ssock, csock) in self.selectors.items():
            if close and not vars(loop).get("_closed") and vars(loop).get("_ssock") is not None:
                try:
                    loop._close_self_pipe()
                    loop._selector.close()
                except ReplayDivergence:
                    raise
                except Exception:
                    pass
                loop._internal_fds += 1
            loop._selector, loop._ssock, loop._csock = selector, ssock, csock
        self.selectors = {}

    def end_of_run(self):
        """At the end of a record or replay pass, inside it: the thread pool
        the run made is shut down and joined, so its threads end within the
        recording and the replay (not stopped as leftovers: their exception
        reports, formatted by pytest in those threads, ran into the main
        thread's; CPython 3.11's AST recursion check is per interpreter);
        then the pass's selector and self-pipe are closed and the loop gets
        back its own."""
        try:
            self._restore(wait=True)
        finally:
            self._end_ready()
            self._end_selectors(close=True)

    def reset(self):
        self._end_ready()
        self._end_selectors(close=False)   # a pass that diverged: dropped, not closed
        self._restore(wait=False)

    def _restore(self, wait):
        """Give each loop back its executor from before the pass; shut the
        pass's own down (joined when *wait*). A divergence met while joining
        is the replay's verdict and goes on; other shutdown errors do not."""
        for loop, before in self.loops:
            now = vars(loop).get("_default_executor")
            if now is before:
                continue
            loop._default_executor = before
            try:
                now.shutdown(wait=wait)
            except ReplayDivergence:
                raise
            except Exception:
                pass


def _children_as_data(system, installer) -> None:
    """A child process the test starts (``subprocess``) is a boundary call:
    it really runs in the recorded pass; the replay pass spawns nothing and
    gets the recorded pid, the pipes' contents and the exit status from the
    tape, as the CLI replays a child that is not this Python (its pipes,
    reads and waits are recorded calls: configs/os.toml). Before, the
    replay spawned the child again: ``waitpid`` of the new pid diverged
    from the recorded one (dateutil's test_import_without_six) and the
    replay's child, never waited for, was reported by a later test
    ("ResourceWarning: subprocess N is still running", an error under
    ``filterwarnings = error``). The CLI's own handling (children.py:
    children that are this Python record themselves) needs a recording
    folder; in-process, such a child runs plainly, unrecorded."""
    import _posixsubprocess
    import posix
    gate = system.gate

    def substitute(module, attr, name):
        real = module.__dict__.get(attr)
        if real is None:
            return
        call = system.patch_function(real, name)

        def child(*args, **kwargs):
            if gate.phase != INTERNAL:
                return real(*args, **kwargs)
            return call(*args, **kwargs)
        child.__name__ = child.__qualname__ = attr
        child.__module__ = module.__name__
        child.__wrapped__ = real
        installer.patch(module, attr, child)
        installer.replace_everywhere({id(real): (real, child)})

    substitute(_posixsubprocess, "fork_exec", "_posixsubprocess.fork_exec")
    # PYVERSIONS: 3.13's subprocess spawns with posix_spawn when it can.
    substitute(posix, "posix_spawn", "posix.posix_spawn")


def _task_number(task):
    name = task.get_name() if hasattr(task, "get_name") else ""
    if name.startswith("Task-") and name[5:].isdigit():
        return int(name[5:])
    return 1 << 62


class _TestTmpDir:
    """The test's own temp directory (pytest's ``tmp_path``/``tmpdir``) as
    its setup left it, put back before the record and the replay passes:
    each run starts from the fixture's state, as a new test would (a file
    opened in append mode grew once per run and the recorded run's
    assertion on its size failed). Copied to the private scratch directory;
    left alone when larger than `LIMIT`."""

    LIMIT = 64 << 20

    def __init__(self, item):
        self.path = self.backup = None
        funcargs = getattr(item, "funcargs", None) or {}
        value = funcargs.get("tmp_path")
        if value is None and funcargs.get("tmpdir") is not None:
            value = str(funcargs["tmpdir"])
        if value is None:
            return
        import shutil
        try:
            path = os.fspath(value)
            if not os.path.isdir(path) or _tree_size(path) > self.LIMIT:
                return
            backup = _scratch_tape()[:-4] + ".tmp"
            shutil.copytree(path, backup, symlinks=True)
        except (OSError, TypeError, shutil.Error):
            return
        self.path, self.backup = path, backup

    def restore(self):
        import shutil
        try:
            for entry in os.scandir(self.path):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            shutil.copytree(self.backup, self.path, symlinks=True, dirs_exist_ok=True)
        except (OSError, shutil.Error):
            pass

    def discard(self):
        if self.backup is not None:
            import shutil
            shutil.rmtree(self.backup, ignore_errors=True)


def _tree_size(path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class _ScratchDir:
    path: str | None = None
    count = 0


def _scratch_tape() -> str:
    """A fresh file name for one test's tape, in a private directory made once
    per process (not with the tempfile module: its state — the cached temp
    dir, the name generator — is the tests'). The tape is written and read
    with the recording file's own encoder (stream/), so a test's values are
    encoded exactly as ``--recording`` encodes them."""
    if _ScratchDir.path is None:
        import atexit
        base = os.environ.get("TMPDIR") or "/tmp"
        path = os.path.join(base, f"retrace-pytest-{_getpid()}-{_urandom(4).hex()}")
        _mkdir(path, 0o700)
        _ScratchDir.path = path
        atexit.register(_remove_scratch_dir, path)
    _ScratchDir.count += 1
    return os.path.join(_ScratchDir.path, f"{_ScratchDir.count}.bin")


def _remove_scratch_dir(path) -> None:
    try:
        for name in os.listdir(path):
            _unlink(os.path.join(path, name))
        _rmdir(path)
    except OSError:
        pass


def _identity_hashing(system, threads) -> bool:
    """Deterministic identity hashes (C++ backend), as in CLI sessions, so
    sets of the test's objects iterate alike on record and replay. Switched
    on once per process (the snapshot of live objects costs); each pass
    (record, replay) restarts the per-thread counters with its own gate."""
    from retracesoftware import utils
    if not utils.CAPABILITIES.has("identity_hashing"):
        return False
    try:
        utils.set_identity_hashing(True, gate=system.gate, thread_id=threads.current)
    except Exception:   # never fail a test because of this
        return False
    return True


_ids_on = False


def _identity_ids() -> None:
    """``id()`` and the default reprs (``<_io.BytesIO object at 0x…>``) from
    the same per-thread counters in each pass, as a CLI recording on the
    C++ backend has them (session_base `install_identity_ids`). Before,
    dateutil's ``tzfile(BytesIO(...))`` keeps ``repr(fileobj)`` and its
    pickle, written to a temporary file, held another address in the
    replay: the ``posix.write`` diverged (TzPickleFileTest, 3 tests).

    Switched on once, for the rest of the process, with ``keep_live``:
    every object alive then keeps its address as its id, and ``builtins.id``
    stays the identity one between passes, where a first id() fixes an
    object's id to its address. So an id a library took before or between
    tests is the one it gets inside a test (freezegun keeps the ids of the
    real ``datetime`` types it replaces: per-pass ids made it miss them,
    dateutil's ``test_utils_today_tz_info`` diverged); only objects first
    asked for their id inside a pass get counter ids. Ids that objects of
    an earlier pass still hold are skipped (utils), so two live objects
    never share one."""
    global _ids_on
    import builtins
    from retracesoftware import utils
    from retracesoftware.install.session_base import modules_of_ours_without_id
    if not _ids_on:
        try:
            utils.set_identity_ids(True, keep_live=True)
        except Exception:   # never fail a test because of this
            return
        _ids_on = True
        builtins.id = utils.identity_id
    for module in modules_of_ours_without_id():   # our runtime keeps the real id
        module.id = _real_id


def _is_unittest_item(item) -> bool:
    try:
        from _pytest.unittest import TestCaseFunction
    except ImportError:  # pragma: no cover
        return False
    return isinstance(item, TestCaseFunction)


# The hooks must be tryfirst: pytest's own pyfunc_call must not also run the
# test, and the unittest method must be wrapped before pytest calls it.
try:
    import pytest as _pytest

    TestRunner.pytest_pyfunc_call = _pytest.hookimpl(tryfirst=True)(TestRunner.pytest_pyfunc_call)
    TestRunner.pytest_runtest_call = _pytest.hookimpl(tryfirst=True)(TestRunner.pytest_runtest_call)
except ImportError:  # pragma: no cover - pytest is only needed when used with pytest
    pass

del sys
