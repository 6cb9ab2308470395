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


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_switch_and_write_stay_atomic_when_the_writer_releases_the_gil(backend):
    """The native writer releases the GIL when its buffer lock is busy (the
    flusher holds it; on a loaded machine for long). Another thread must not
    count instructions and write its PREEMPT in that window: on the tape
    every switch names the thread that held the turn, and every event is
    written by the thread holding it."""
    import time
    gate_mod = load_backend(backend)
    gate = gate_mod.Gate()
    names = {}
    tape = []

    def write(*values):
        time.sleep(0)             # the GIL released inside a write
        tape.append((names[threading.get_ident()], values))

    tracer = tracer_class(backend)("record", gate, _want, lambda: names[threading.get_ident()], "PREEMPT",
                                   write=write, bind=lambda obj: None)

    def run(name):
        names[threading.get_ident()] = name
        gate.phase = gate_mod.INTERNAL
        tracer.current()
        try:
            for i in range(12):
                work(10)
                tracer.write("EV", i)
        finally:
            tracer.uninstall()

    previous = sys.gettrace()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=run, args=(f"t{k}",)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
        sys.settrace(previous)
    holder = None
    switches = 0
    for writer, values in tape:
        if values[0] == "PREEMPT":
            assert holder is None or values[1] == holder, (writer, values, holder)
            holder = writer
            switches += 1
        else:
            assert holder is None or writer == holder, (writer, values, holder)
            holder = writer
    assert switches > 3


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
