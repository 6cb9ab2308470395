"""inspect: a human summary and --json of what a recording holds."""
import json
import sys

from retrace_testing import run


def test_inspect_summary_and_json(scenario):
    s = scenario("""
        import time, random
        for _ in range(5):
            time.time()
        print(random.random())
        raise SystemExit(3)
    """)
    rec = s.record()
    assert rec.returncode == 3, rec.err
    human = run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording)], s.dir)
    assert human.returncode == 0, human.err
    assert "complete, exit code 3" in human.out
    assert "time.time" in human.out and "app.py" in human.out
    data = json.loads(run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording), "--json"],
                          s.dir).stdout)
    assert data["complete"] is True and data["exit_code"] == 3
    assert dict(data["top_functions"])["time.time"] == 5
    assert data["target"]["kind"] == "script"


def test_inspect_reports_a_torn_recording(scenario):
    s = scenario("""
        import time
        for _ in range(2000):
            time.time()
        print("done")
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    data = s.recording.read_bytes()
    s.recording.write_bytes(data[: len(data) - 7])
    human = run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording)], s.dir)
    assert human.returncode == 0, human.err
    assert "ends early at event" in human.out, human.out
