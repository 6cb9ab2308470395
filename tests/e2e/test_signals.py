"""Signal handlers run while the program runs pure Python: recorded as
SIGNAL events with a position, replayed there (docs/SIGNALS.md)."""
import signal
import subprocess
import sys
import time

import pytest

from retrace_testing import Run, assert_faithful, _env

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no setitimer on this platform")


# The program's pure-Python loop that Ctrl-C interrupts ({finally}: what
# runs before it prints where it stopped).
CTRL_C_LOOP = """
        print("ready", time.time() > 0, flush=True)
        total = i = 0
        try:
            while True:
                i += 1
                total += i * i % 7
                if i == 1:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        finally:{finally}
            print("stopped at", i, total)
"""


def test_ctrl_c_in_pure_python_loop_replays_with_exit_130(scenario):
    # The test presses Ctrl-C (SIGINT) once the loop runs: how far it got
    # differs every run; the replay stops at the same iteration, with the
    # same traceback and exit code 130.
    # SIGINT is blocked until the loop runs (a Ctrl-C inside print() is a
    # signal inside a boundary call: another path): it is handled when the
    # loop unblocks it, or later in the loop.
    s = scenario("""
        import signal, time
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    """ + CTRL_C_LOOP.replace("{finally}", ""))
    out, err = _record_ctrl_c(s)
    # The second replay starts with SIGINT ignored (a background job): the
    # recording says the program started with Python's handler.
    _replays_end_as_recorded(s, out, err, (signal.SIG_DFL, signal.SIG_IGN))


def _record_ctrl_c(s, delay=0.0):
    """Record *s*, press Ctrl-C *delay* seconds after it printed "ready True":
    (stdout, stderr) of a run that ended with the KeyboardInterrupt (130).
    Started as from a terminal: SIGINT at its default even when this test
    runs in a background job of a script (which inherits it ignored, and
    then Ctrl-C does nothing, plain or recorded)."""
    proc = subprocess.Popen([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                             "--", "python", s.script.name], cwd=s.dir, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_sigint(signal.SIG_DFL))
    first = proc.stdout.readline()
    assert first == b"ready True\n", first
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"KeyboardInterrupt" in err and b"retrace: error" not in err, err
    return first + rest, err


def _replays_end_as_recorded(s, out, err, starts):
    """One replay per SIGINT disposition at start: exit 130, the same stdout,
    the same traceback line for line (at a call the replay raises just after
    it returned, so the column markers under it (3.11+) may differ,
    docs/SIGNALS.md)."""
    for start in starts:
        rep = _replay_or_dump(s, start)
        assert rep.returncode == 130, (start, rep.err)
        assert rep.stdout == out, (rep.out, out)
        assert _no_carets(rep.stderr) == _no_carets(err), rep.err


def test_ctrl_c_in_pure_python_while_threads_make_calls_replays_with_exit_130(scenario):
    # Python's own SIGINT handler, the main thread in pure Python and two
    # workers making recorded calls the whole time: the KeyboardInterrupt's
    # SIGNAL lies after the workers' events on the tape. Before, the replay
    # only indexed the tape for handlers the program installed: exit 3,
    # "expected SIGINT handled at ..., got the thread's next event".
    s = scenario("""
        import signal, threading, time
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        lock = threading.Lock()
        stop = [False]
        def worker(w):
            calls = 0
            while True:
                with lock:
                    if stop[0]:
                        break
                time.time()
                calls += 1
            print("worker", w, calls > 0)
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(2)]
        for t in threads:
            t.start()
    """ + CTRL_C_LOOP.replace("{finally}", """
            with lock:
                stop[0] = True
            for t in threads:
                t.join()"""))
    from retracesoftware.install.signals import index_signals
    # The workers' calls come between "ready" and the KeyboardInterrupt.
    out, err = _record_ctrl_c(s, delay=0.3)
    assert index_signals(s.recording), "the SIGNAL should follow the workers' events on the tape"
    _replays_end_as_recorded(s, out, err, (signal.SIG_DFL, signal.SIG_DFL))


def _replay_or_dump(s, start, timeout=120):
    """Replay with SIGINT's disposition *start*; a replay still running after
    *timeout* s gets SIGABRT with faulthandler on, so the failure shows where
    each thread was (3.13, Python backend: a replay once ran on past the
    recorded KeyboardInterrupt, and the message said only "timed out")."""
    proc = subprocess.Popen([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording)],
                            cwd=s.dir, env=_env({"PYTHONFAULTHANDLER": "1"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_sigint(start))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(f"the replay (SIGINT {start} at start) was still running after {timeout} s; "
                             f"stdout {out[-300:]!r}; its threads:\n{err.decode(errors='replace')[-6000:]}")
    return Run(proc.returncode, out, err)


def _sigint(disposition):
    return lambda: signal.signal(signal.SIGINT, disposition)


def test_a_program_started_with_sigint_ignored_replays_so(scenario):
    """A process started with SIGINT ignored (a background job of a script)
    sees it ignored on replay too, whatever the replay starts with."""
    s = scenario("""
        import signal, time
        print(signal.getsignal(signal.SIGINT), time.time() > 0)
    """)
    for record_start, replay_start in ((signal.SIG_IGN, signal.SIG_DFL), (signal.SIG_DFL, signal.SIG_IGN)):
        cmd = [sys.executable, "-m", "retracesoftware", "--recording", str(s.recording)]
        rec = subprocess.run(cmd + ["--", "python", s.script.name], cwd=s.dir, env=_env(),
                             capture_output=True, timeout=120, preexec_fn=_sigint(record_start))
        assert rec.returncode == 0, rec.stderr
        assert rec.stdout.startswith(b"1 " if record_start == signal.SIG_IGN else b"<built-in"), rec.stdout
        rep = subprocess.run(cmd, cwd=s.dir, env=_env(), capture_output=True, timeout=120,
                             preexec_fn=_sigint(replay_start))
        assert rep.returncode == 0, rep.stderr
        assert rep.stdout == rec.stdout, (rec.stdout, rep.stdout)


def _no_carets(text):
    return [line for line in text.decode("utf-8", "replace").splitlines() if set(line.strip()) - set("^~")]


ITIMER = """
    import signal, time
    samples = []
    def tick(signum, frame):
        samples.append((n, round(time.time() % 1000, 6), frame.f_code.co_name))
    n = acc = 0     # (before the first tick: a slow start must not make tick fail)
    signal.signal(signal.{sig}, tick)
    signal.setitimer(signal.{which}, 0.01, 0.01)
    def work(k):
        t = 0
        for i in range(k):
            t += i * i
        return t % 11
    while len(samples) < 8:
        n += 1
        acc += work(n % 50)
        if n % 1000 == 0:
            time.monotonic()
    signal.setitimer(signal.{which}, 0)
    print(len(samples), acc)
    for s in samples:
        print(s)
"""


@pytest.mark.parametrize("sig,which", [("SIGALRM", "ITIMER_REAL"), ("SIGPROF", "ITIMER_PROF")])
def test_itimer_samples_in_pure_python_replay_faithfully(scenario, sig, which):
    s = scenario(ITIMER.format(sig=sig, which=which))
    rec = assert_faithful(s, replays=2)
    # At least 8: one more tick may land between the loop's end and the
    # disarming setitimer (seen under load: "9 ..."); the replay must match
    # the recording either way (assert_faithful).
    assert rec.returncode == 0 and int(rec.stdout.split()[0]) >= 8, rec.err


# The main thread computes in pure Python while two workers make recorded
# calls: a timer signal's SIGNAL event usually lies after the workers' events
# on the tape, not right after the main thread's last event.
SIGNAL_AMONG_THREADS = """
    import signal, sys, threading, time
    sys.setswitchinterval(0.0002)
    samples = []
    lock = threading.Lock()
    stop = [False]
    def tick(signum, frame):
        samples.append((n, frame.f_code.co_name, round(time.time() % 1000, 6)))
    def worker(w):
        calls = 0
        while True:
            with lock:
                if stop[0]:
                    break
            time.time()
            calls += 1
            sum(range(200))
        print("worker", w, calls)
    n = acc = 0
    {before}signal.signal(signal.SIGALRM, tick)
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    {after}time.sleep(0.01); signal.signal(signal.SIGALRM, tick)
    signal.setitimer(signal.ITIMER_REAL, 0.004, 0.004)
    def work(k):
        t = 0
        for i in range(k):
            t += i * i
        return t % 11
    while len(samples) < 6:
        n += 1
        acc += work(n % 50)
        if n % 1000 == 0:
            time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, 0)
    with lock:
        stop[0] = True
    for t in threads:
        t.join()
    print(len(samples), acc)
    for s in samples:
        print(s)
"""


@pytest.mark.parametrize("installed", ["before_threads", "after_threads"])
def test_a_signal_after_other_threads_events_replays_at_its_position(scenario, installed):
    """The SIGNAL's thread consumed its last event, other threads' events
    follow on the tape, then the SIGNAL: the replay announces it when the
    main thread consumes that last event (the tape's index, read when the
    replay has a second thread and the program's handler, in either order)
    and runs the handler at the recorded position (before: exit 3,
    'expected SIGNAL 14, got call time.monotonic()')."""
    from retracesoftware.install.signals import index_signals
    before = "" if installed == "before_threads" else "# "
    after = "# " if installed == "before_threads" else ""
    s = scenario(SIGNAL_AMONG_THREADS.replace("{before}", before).replace("{after}", after))
    # A recording in which no SIGNAL lies after other threads' events would
    # not test this (the workers may not have run between the main thread's
    # last event and the signal): record again, a few times at most.
    for attempt in range(5):
        rec = assert_faithful(s, replays=2, check_plain_differs=attempt == 0)
        if index_signals(s.recording):
            break
    else:
        pytest.fail("5 recordings without a SIGNAL after other threads' events")
    assert rec.returncode == 0 and rec.stdout.count(b"worker") == 2, rec.err


def test_a_forked_childs_signal_after_its_threads_events_replays(scenario):
    """The same program in a forked child: the child's replay switches to
    its own tape and indexes it when the child starts its first thread
    (before: a parent that had started a thread kept its index, and the
    child's was never made)."""
    import glob
    import os
    from retracesoftware.children import children_dir
    from retracesoftware.install.signals import index_signals
    s = scenario("""
        import os, runpy, sys, threading, time
        print("parent", time.time() > 0, flush=True)
        t = threading.Thread(target=time.time)      # the parent's replay indexes its own tape
        t.start()
        t.join()
        pid = os.fork()
        if pid == 0:
            try:
                runpy.run_path("child_prog.py", run_name="__main__")
            finally:
                sys.stdout.flush()
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exited", os.waitstatus_to_exitcode(status))
    """)
    import textwrap
    (s.dir / "child_prog.py").write_text(textwrap.dedent(
        SIGNAL_AMONG_THREADS.replace("{before}", "").replace("{after}", "# ")))
    for attempt in range(5):
        rec = assert_faithful(s, replays=2, check_plain_differs=attempt == 0)
        tapes = glob.glob(os.path.join(children_dir(str(s.recording)), "*.bin"))
        if any(index_signals(t) for t in tapes):
            break
    else:
        pytest.fail("5 recordings without a SIGNAL after other threads' events in the child")
    assert rec.returncode == 0 and rec.stdout.count(b"worker") == 2 and b"child exited 0" in rec.stdout, rec.err


# Threads switch as often as the interpreter allows (every check), the
# workers are always ready to make their next call and the timer ticks every
# 2 ms: SIGNALs come in a row (a handler's signal put off, then the next
# tick) and right after one another past other threads' events.
SIGNALS_IN_A_ROW = """
    import signal, sys, threading, time
    sys.setswitchinterval(1e-6)
    samples = []
    stop = [False]
    lock = threading.Lock()
    def tick(signum, frame):
        samples.append((n, frame.f_code.co_name))
    def worker(w):
        calls = 0
        while True:
            with lock:
                if stop[0]:
                    break
            time.time()
            calls += 1
        print("worker", w, calls)
    n = acc = 0
    signal.signal(signal.SIGALRM, tick)
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
    def work(k):
        t = 0
        for i in range(k):
            t += i * i
        return t % 11
    while len(samples) < 15:
        n += 1
        acc += work(n % 50)
        if n % 1000 == 0:
            time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, 0)
    with lock:
        stop[0] = True
    for t in threads:
        t.join()
    print(len(samples), acc)
    for s in samples:
        print(s)
"""


def test_signals_in_a_row_among_busy_threads_replay(scenario):
    """Before: a SIGNAL right after another one of its thread, then other
    threads' events, then its next SIGNAL: the index's mark counts the
    THREAD_SWITCH the reader had not decoded yet after reading the first
    SIGNAL, so the second was never announced ('expected SIGNAL 14, got call
    time.monotonic()', 5 of 5 replays); a SIGNAL read after a handler moved
    the head to another thread's event without waking that thread (a
    deadlock, 3 of 10)."""
    s = scenario(SIGNALS_IN_A_ROW)
    rec = assert_faithful(s, replays=2)
    assert rec.returncode == 0 and rec.stdout.count(b"worker") == 2, rec.err
