"""Signal handlers run while the program runs pure Python: recorded as
SIGNAL events with a position, replayed there (docs/SIGNALS.md)."""
import signal
import subprocess
import sys

import pytest

from retrace_testing import assert_faithful, _env

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no setitimer on this platform")


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
        print("ready", time.time() > 0, flush=True)
        total = i = 0
        try:
            while True:
                i += 1
                total += i * i % 7
                if i == 1:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        finally:
            print("stopped at", i, total)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "retracesoftware", "--recording", str(s.recording),
                             "--", "python", s.script.name], cwd=s.dir, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    assert first == b"ready True\n", first
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"KeyboardInterrupt" in err and b"retrace: error" not in err, err
    for _ in range(2):
        rep = s.replay()
        assert rep.returncode == 130, rep.err
        assert rep.stdout == first + rest, (rep.out, rest)
        # Same traceback, line for line; at a call the replay raises just
        # after it returned, so the column markers under it (3.11+) may
        # differ (docs/SIGNALS.md).
        assert _no_carets(rep.stderr) == _no_carets(err), rep.err


def _no_carets(text):
    return [line for line in text.decode("utf-8", "replace").splitlines() if set(line.strip()) - set("^~")]


ITIMER = """
    import signal, time
    samples = []
    def tick(signum, frame):
        samples.append((n, round(time.time() % 1000, 6), frame.f_code.co_name))
    signal.signal(signal.{sig}, tick)
    signal.setitimer(signal.{which}, 0.01, 0.01)
    def work(k):
        t = 0
        for i in range(k):
            t += i * i
        return t % 11
    n = acc = 0
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
