"""CPU-time clocks and resource accounting are recorded: a replay does far
less work than the recording, so these readings must come from the tape."""
import sys

import pytest

from retrace_testing import assert_faithful


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX clocks and resource")
def test_cpu_clocks_and_rusage_replay(scenario):
    s = scenario("""
        import os, resource, threading, time
        sum(i * i for i in range(20000))
        print(time.process_time(), time.process_time_ns())
        print(time.thread_time(), time.thread_time_ns())
        print(time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID), time.clock_gettime_ns(time.CLOCK_THREAD_CPUTIME_ID))
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(ru.ru_utime, ru.ru_stime, ru.ru_maxrss, ru.ru_minflt)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime, resource.getrlimit(resource.RLIMIT_NOFILE))
        t = os.times()
        print(t.user, t.system, t.elapsed, os.times()[4])
        out = []
        th = threading.Thread(target=lambda: out.append(time.thread_time_ns()))
        th.start(); th.join()
        print(out)
    """)
    assert_faithful(s)
