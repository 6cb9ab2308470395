"""signal: handlers run at the recorded point of the program."""
import signal

import pytest

from stdlib_support import assert_offline_faithful

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no setitimer on this platform")


def test_itimer_handler_interrupts_busy_loop_at_recorded_point(scenario):
    # How many iterations run before the timer fires differs every run; the
    # replay must run the handler after exactly the recorded count.
    s = scenario("""
        import signal, time
        fired = []
        def handler(signum, frame):
            fired.append((signum, count))
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        count = 0
        while not fired:
            count += 1
            if count % 1000 == 0:
                time.monotonic()
        print("fired after", count, fired)
        print(signal.getitimer(signal.ITIMER_REAL))
    """)
    assert_offline_faithful(s, replays=2)


def test_itimer_handler_runs_inside_pause(scenario):
    # The handler re-arms the timer; each delivery interrupts signal.pause(),
    # and reads the clock (a boundary call nested in the callback).
    s = scenario("""
        import signal, time
        stamps = []
        def tick(signum, frame):
            stamps.append(time.perf_counter_ns())
            if len(stamps) < 3:
                signal.setitimer(signal.ITIMER_REAL, 0.05)
        signal.signal(signal.SIGALRM, tick)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        pauses = 0
        while len(stamps) < 3:
            signal.pause()
            pauses += 1
        print(pauses, [b - a for a, b in zip(stamps, stamps[1:])])
    """)
    assert_offline_faithful(s, replays=2)


def test_sigwait_and_pthread_sigmask(scenario):
    s = scenario("""
        import os, signal, random
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        os.kill(os.getpid(), signal.SIGUSR2)
        print(signal.sigpending() == {signal.SIGUSR2})
        print(signal.sigwait({signal.SIGUSR2}) == signal.SIGUSR2, os.getpid())
        info = signal.sigtimedwait({signal.SIGUSR2}, 0.01)
        print(info, random.random())
    """)
    assert_offline_faithful(s)


def test_kill_self_with_sigusr1(scenario):
    s = scenario("""
        import os, signal, random
        seen = []
        def on_usr1(signum, frame):
            seen.append(random.random())
        old = signal.signal(signal.SIGUSR1, on_usr1)
        print(old == signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGUSR1)
        print("after kill", seen)
        signal.raise_signal(signal.SIGUSR1)
        print("after raise", len(seen), seen[-1])
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGUSR1)
        print("ignored", len(seen), os.getpid())
    """)
    assert_offline_faithful(s, replays=2)


def test_alarm_interrupts_sleep_and_handler_raises(scenario):
    s = scenario("""
        import signal, time
        class Timeout(Exception):
            pass
        def on_alarm(signum, frame):
            raise Timeout(time.time())
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        start = time.time()
        try:
            time.sleep(5)
        except Timeout as exc:
            print("timed out", exc.args[0] - start)
        print(signal.getsignal(signal.SIGALRM) is on_alarm)
    """)
    rec = assert_offline_faithful(s)
    assert b"timed out" in rec.stdout
