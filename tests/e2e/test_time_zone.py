"""The time zone replays as recorded (install/zone.py): the zone the
recording started in, whatever the replaying machine's, and zones the
program sets with TZ + time.tzset()."""
import os

import pytest

pytestmark = pytest.mark.skipif(not os.path.isdir("/usr/share/zoneinfo"), reason="no zoneinfo database")

ZONES = """
    import datetime, os, random, time
    def show(label):
        print(label, time.tzname, time.timezone, time.altzone, time.daylight)
        print(" ", datetime.datetime.fromtimestamp(1_700_000_000), datetime.datetime(2024, 7, 1).astimezone().tzname())
        print(" ", time.strftime("%H:%M %Z", time.localtime(1_700_000_000)), time.mktime((2024, 1, 1, 0, 0, 0, 0, 1, -1)))
    show("start")
    zone = random.choice(["Asia/Tokyo", "America/New_York", "Europe/Paris", "Australia/Sydney", "EST5EDT"])
    os.environ["TZ"] = zone
    time.tzset()
    show(zone)
"""


def test_zone_at_start_and_tzset_replay(scenario):
    s = scenario(ZONES)
    plain = set()
    for _ in range(12):      # 5 zones: 4 runs coincide 1 time in 125
        plain.add(s.plain().stdout)
        if len(plain) > 1:
            break
    assert len(plain) > 1, plain
    rec = s.record(env={"TZ": "America/Los_Angeles"})
    assert rec.returncode == 0, rec.err
    assert b"PST" in rec.stdout.splitlines()[0], rec.out
    rep = s.replay(env={"TZ": "Asia/Kolkata"})     # another machine, another zone
    assert rep.returncode == 0, rep.err
    assert rep.stdout == rec.stdout, rep.out + rep.err
    rep = s.replay(env={"TZ": ""})
    assert rep.stdout == rec.stdout, rep.out + rep.err


SHOW = """
    import datetime, time
    print(time.tzname, time.timezone, datetime.datetime.fromtimestamp(1_700_000_000))
"""


def test_zone_file_that_differs_here_replays_the_recorded_one(scenario, tmp_path):
    # The zone named by TZ is another file on the replaying machine (same
    # name, other bytes: TZDIR here holds Paris under the name recorded
    # for Tokyo): the replay uses the recorded bytes, not the name. When
    # the bytes are the same the replay sets TZ as recorded and writes no
    # zone file (install/zone.py).
    def zone_dir(name, source):
        d = tmp_path / name / "Custom"
        d.mkdir(parents=True)
        (d / "Zone").write_bytes(open(os.path.join("/usr/share/zoneinfo", source), "rb").read())
        return str(d.parent)
    tokyo, paris = zone_dir("a", "Asia/Tokyo"), zone_dir("b", "Europe/Paris")
    s = scenario(SHOW)
    env = {"TZ": "Custom/Zone", "TZDIR": tokyo}
    assert s.plain(env=env).stdout != s.plain(env={"TZ": "Custom/Zone", "TZDIR": paris}).stdout
    rec = s.record(env=env)
    assert rec.returncode == 0 and b"JST" in rec.stdout, rec.out + rec.err
    for i, replay_env in enumerate(({"TZ": "Custom/Zone", "TZDIR": paris}, env)):
        temp = tmp_path / f"tmp{i}"
        temp.mkdir()
        rep = s.replay(env={**replay_env, "TMPDIR": str(temp)})
        assert rep.returncode == 0, rep.err
        assert rep.stdout == rec.stdout, rep.out + rep.err
        assert list(temp.iterdir()) == []          # a zone file written is removed at exit
