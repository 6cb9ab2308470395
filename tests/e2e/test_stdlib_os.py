"""os and time edge cases: environ iteration, scatter reads, datetime/time."""
from stdlib_support import assert_offline_faithful


def test_environ_iteration_and_copy(scenario):
    s = scenario("""
        import os
        print(sorted(k for k in os.environ if k.startswith("RETRACE_T_")))
        print(sorted((k, v) for k, v in os.environ.items() if k.startswith("RETRACE_T_")))
        print(len(os.environ) > 0, dict(os.environ.copy()).get("RETRACE_T_A"))
    """)
    rec = s.record(env={"RETRACE_T_A": "one", "RETRACE_T_B": "two"})
    assert b"one" in rec.stdout, rec.err
    rep = s.replay(env={"RETRACE_T_A": "changed"})
    assert rep.stdout == rec.stdout, rep.err
    assert rep.returncode == rec.returncode


def test_readv_preadv_fill_buffers(scenario):
    s = scenario("""
        import os
        with open("blob.bin", "rb") as f:
            fd = f.fileno()
            a, b = bytearray(3), bytearray(5)
            print(os.readv(fd, [a, b]), a.hex(), b.hex())
            c = bytearray(4)
            print(os.preadv(fd, [c], 10), c.hex())
    """)
    import os
    (s.dir / "blob.bin").write_bytes(os.urandom(32))
    # The data differs between record and replay (then is gone): replay
    # must fill the caller's buffers from the recording.
    rec = s.record()
    assert rec.returncode == 0, rec.err
    (s.dir / "blob.bin").write_bytes(os.urandom(32))
    rep = s.replay()
    assert rep.stdout == rec.stdout, rep.err
    (s.dir / "blob.bin").unlink()
    rep = s.replay()
    assert rep.stdout == rec.stdout, rep.err


def test_datetime_and_time_edges(scenario):
    s = scenario("""
        import datetime, time, calendar
        now = datetime.datetime.now()
        aware = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=5, minutes=30)))
        print(now.isoformat(), aware.isoformat(), aware.utcoffset())
        print(datetime.datetime.fromtimestamp(time.time()).microsecond)
        print(datetime.datetime.utcfromtimestamp(time.time_ns() / 1e9).isoformat())
        print(datetime.date.today().isoformat(), datetime.datetime.today().second)
        lt = time.localtime(); gm = time.gmtime()
        print(time.mktime(lt) - calendar.timegm(gm), time.strftime("%Y-%m-%d %H:%M:%S", lt))
        print(time.ctime(), time.asctime(), time.tzname, time.timezone)
        print(time.clock_gettime(time.CLOCK_MONOTONIC), time.clock_gettime_ns(time.CLOCK_REALTIME))
        print(time.thread_time_ns() >= 0, time.get_clock_info("monotonic").implementation)
    """)
    assert_offline_faithful(s, replays=2)
