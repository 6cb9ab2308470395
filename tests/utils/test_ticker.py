"""ScheduleTracer (--schedule's instruction counters): both backends count
the same instructions, and a record tracer writes the switch before an
event of another thread (utils/_ticker.py is the contract)."""
import sys
import threading

import pytest

from .conftest import load_backend
from retracesoftware.utils._ticker import ScheduleTracer as PyScheduleTracer


def tracer_class(name):
    if name == "python":
        return PyScheduleTracer
    return load_backend("cpp").ScheduleTracer


def work(n):
    total = 0
    for i in range(n):
        total += helper(i)
    return total


def helper(i):
    return i % 7


def _want(code):
    return 1 if code.co_name in ("work", "helper") else 0


def _count_in_thread(cls, gate_mod, n):
    gate = gate_mod.Gate()
    written = []
    tracer = cls("record", gate, _want, lambda: threading.current_thread().name, "PREEMPT",
                 write=lambda *v: written.append(v), bind=lambda obj: None)
    result = {}

    def run():
        gate.phase = gate_mod.INTERNAL
        ticker = tracer.current()
        try:
            work(n)
        finally:
            tracer.uninstall()
        result["count"] = ticker.count

    previous = sys.gettrace()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    sys.settrace(previous)
    return result["count"], tracer, written


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_counts_program_instructions(backend):
    gate_mod = load_backend(backend)
    small, _, _ = _count_in_thread(tracer_class(backend), gate_mod, 10)
    big, _, _ = _count_in_thread(tracer_class(backend), gate_mod, 20)
    assert small > 0
    assert big > small      # per iteration: work's loop body and helper's frame


def test_backends_count_alike():
    try:
        cpp = load_backend("cpp")
    except Exception:
        pytest.skip("no C++ backend")
    py = load_backend("python")
    assert _count_in_thread(PyScheduleTracer, py, 50)[0] == _count_in_thread(cpp.ScheduleTracer, cpp, 50)[0]


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_record_writes_the_switch_first(backend):
    gate_mod = load_backend(backend)
    gate = gate_mod.Gate()
    written = []
    names = {}
    tracer = tracer_class(backend)("record", gate, _want, lambda: names[threading.get_ident()], "PREEMPT",
                                   write=lambda *v: written.append(v), bind=lambda obj: None)

    def in_thread(name, values):
        def run():
            names[threading.get_ident()] = name
            tracer.write(*values)
            tracer.uninstall()
        t = threading.Thread(target=run)
        t.start()
        t.join()

    previous = sys.gettrace()
    try:
        in_thread("a", ("X", 1))
        in_thread("a2", ("Y", 2))
    finally:
        sys.settrace(previous)
    # The first writer ran first: no switch; the second follows "a", which
    # had counted nothing, in one write with its own values.
    assert written == [("X", 1), ("PREEMPT", "a", 0, "Y", 2)]


def test_bad_mode_and_missing_callables():
    with pytest.raises(ValueError):
        PyScheduleTracer("rewind", None, _want, lambda: 0, "PREEMPT")
    with pytest.raises(TypeError):
        PyScheduleTracer("record", None, _want, lambda: 0, "PREEMPT")
    try:
        cpp = load_backend("cpp")
    except Exception:
        return
    with pytest.raises(ValueError):
        cpp.ScheduleTracer("rewind", cpp.Gate(), _want, lambda: 0, "PREEMPT")
    with pytest.raises(TypeError):
        cpp.ScheduleTracer("replay", cpp.Gate(), _want, lambda: 0, "PREEMPT")


FRESH = """
def fresh(n):
    t = 0
    for i in range(n):
        t += i
    return t
"""


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_first_frame_of_a_code_object_is_counted(backend):
    """3.13 turns opcode events on per code object, only for a frame that
    has f_trace: the first frame of a new code object ran uncounted, and
    which thread runs it first is a race (replays then deadlocked)."""
    gate_mod = load_backend(backend)
    gate = gate_mod.Gate()
    ns = {}
    exec(compile(FRESH, "<fresh>", "exec"), ns)     # a code object no frame ran yet
    tracer = tracer_class(backend)("record", gate, lambda code: int(code.co_name == "fresh"),
                                   lambda: 1, "PREEMPT", write=lambda *v: None, bind=lambda obj: None)
    counts = []

    def run():
        gate.phase = gate_mod.INTERNAL
        ticker = tracer.current()
        try:
            for _ in range(2):
                before = ticker.count
                ns["fresh"](10)
                counts.append(ticker.count - before)
        finally:
            tracer.uninstall()

    previous = sys.gettrace()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    sys.settrace(previous)
    assert counts[0] == counts[1] > 0, counts


def _check_turns(tape):
    """*tape*: ``(writer, values, writer's count when it wrote)``. Every
    switch names the thread that held the turn, every event is written by
    the thread holding it, and a thread ran no instruction without the turn:
    when it takes the turn back its count is still the one the switch away
    from it said (a replay runs it from there)."""
    holder = None
    stopped = {}
    for writer, values, count in tape:
        if values[0] == "PREEMPT":
            assert holder is None or values[1] == holder, (writer, values, holder)
            assert count == stopped.get(writer, 0), (
                f"{writer} ran {count - stopped.get(writer, 0)} instruction(s) without the turn", tape)
            stopped[values[1]] = values[2]
        else:
            assert holder is None or writer == holder, (writer, values, holder)
        holder = writer


def _wait_for(condition, what):
    """Poll for a state that must come (a hang guard only, not a timing)."""
    import time
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"hang: {what}"
        time.sleep(0.001)


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_switch_and_write_stay_atomic_when_the_writer_releases_the_gil(backend):
    """The native writer releases the GIL when its buffer lock is busy (the
    flusher holds it; on a loaded machine for long). Another thread must not
    count instructions and write its PREEMPT in that window: on the tape
    every switch names the thread that held the turn, and every event is
    written by the thread holding it.

    Deterministic: thread a stays inside a write (GIL released) until
    thread b, which then runs counted code, either waits for the record
    lock (``waiting``) or has written its switch inside a's write (the old
    C++ tracer: then the tape has a's event after b's switch)."""
    gate_mod = load_backend(backend)
    gate = gate_mod.Gate()
    names, tickers = {}, {}
    tape = []
    in_write, release = threading.Event(), threading.Event()

    def write(*values):
        name = names[threading.get_ident()]
        if values == ("HOLD",):
            in_write.set()
            release.wait()
        tape.append((name, values, tickers[name].count))

    tracer = tracer_class(backend)("record", gate, _want, lambda: names[threading.get_ident()], "PREEMPT",
                                   write=write, bind=lambda obj: None)

    def run(name, last):
        names[threading.get_ident()] = name
        gate.phase = gate_mod.INTERNAL
        tickers[name] = tracer.current()
        try:
            work(3)
            tracer.write(last)
        finally:
            tracer.uninstall()

    previous = sys.gettrace()
    try:
        a = threading.Thread(target=run, args=("a", "HOLD"))
        a.start()
        in_write.wait()
        b = threading.Thread(target=run, args=("b", "EV"))
        b.start()
        _wait_for(lambda: tape or getattr(tracer, "waiting", 0), "b neither waits nor writes")
        release.set()
        a.join()
        b.join()
    finally:
        release.set()
        sys.settrace(previous)
    assert [v[0] for _, v, _ in tape] == ["HOLD", "PREEMPT", "EV"], tape
    _check_turns(tape)


def test_a_thread_let_run_after_the_switch_does_not_take_the_instruction():
    """The Python tracer's switch is Python code: the eval loop may let
    another thread run right after the switch was written (here: in the
    gate's setter, where the tracer restores the phase), before the
    instruction it was made for. That thread writes its own switch naming
    this one at the count before the instruction; the instruction then ran
    in the other thread's turn and the tape said otherwise (a replay ran it
    after that thread's instructions). The C tracer runs no Python code
    between its switch and the instruction."""
    gate_mod = load_backend("python")
    here = {}
    go_x, x_done = threading.Event(), threading.Event()

    class LettingGate(gate_mod.Gate):
        __slots__ = ("hook",)

        @property
        def phase(self):
            return gate_mod.Gate.phase.fget(self)

        @phase.setter
        def phase(self, value):
            gate_mod.Gate.phase.fset(self, value)
            hook = getattr(self, "hook", None)
            if hook is not None and value == gate_mod.INTERNAL and threading.get_ident() == here.get("t"):
                self.hook = None
                hook()

    gate = LettingGate()
    names, tickers = {}, {}
    tape = []

    def write(*values):
        name = names[threading.get_ident()]
        tape.append((name, values, tickers[name].count))

    tracer = PyScheduleTracer("record", gate, _want, lambda: names[threading.get_ident()], "PREEMPT",
                              write=write, bind=lambda obj: None)

    def let_x_run():            # as the eval loop may do at a call in the tracer
        go_x.set()
        x_done.wait()

    def x():
        names[threading.get_ident()] = "x"
        gate.phase = gate_mod.INTERNAL
        tickers["x"] = tracer.current()
        try:
            work(2)             # x runs first: it holds the turn
            x_ready.set()
            go_x.wait()
            work(2)
        finally:
            tracer.uninstall()
            x_done.set()

    def t():
        names[threading.get_ident()] = "t"
        here["t"] = threading.get_ident()
        gate.phase = gate_mod.INTERNAL
        tickers["t"] = tracer.current()
        try:
            x_ready.wait()
            gate.hook = let_x_run
            work(2)
        finally:
            tracer.uninstall()

    x_ready = threading.Event()
    previous = sys.gettrace()
    try:
        threads = [threading.Thread(target=x), threading.Thread(target=t)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.settrace(previous)
    assert getattr(gate, "hook", None) is None      # x was let run after t's switch
    _check_turns(tape)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_a_forked_child_writes_though_another_thread_held_the_record_lock(backend):
    import os
    import signal
    gate_mod = load_backend(backend)
    held, release = threading.Event(), threading.Event()

    def write(*values):
        if values[0] == "HOLD":           # a write in progress in another thread at the fork
            held.set()
            release.wait()

    tracer = tracer_class(backend)("record", gate_mod.Gate(), _want, threading.get_ident, "PREEMPT",
                                   write=write, bind=lambda obj: None)
    t = threading.Thread(target=tracer.write, args=("HOLD",))
    t.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)                  # a hang guard only: the child is killed, the test fails
        tracer.after_fork()
        tracer.write("CHILD")
        os._exit(0)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        t.join()
        tracer.uninstall()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
