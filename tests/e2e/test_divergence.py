"""A replay that does something else is caught at that call: exit code 3 and
one precise line naming the event and both sides."""
import re


def test_changed_program_diverges(scenario):
    s = scenario("""
        import time
        print(time.time())
        print(time.time())
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    s.script.write_text("import time, random\nprint(time.time())\nprint(random.random())\n")
    rep = s.replay("--force")
    assert rep.returncode == 3, rep.err
    first = [l for l in rep.err.splitlines() if l.startswith("retrace: error:")]
    assert first, rep.err
    line = first[0]
    assert re.search(r"event \d+", line), line
    assert "time.time" in line and "random" in line, line
    assert "Traceback" not in rep.err


def test_extra_calls_on_replay_diverge(scenario):
    s = scenario("""
        import time
        print(time.time())
    """)
    s.record()
    s.script.write_text("import time\nprint(time.time())\nprint(time.time())\n")
    rep = s.replay("--force")
    assert rep.returncode == 3, rep.err
    assert "retrace: error:" in rep.err


def test_missing_calls_on_replay_diverge(scenario):
    s = scenario("""
        import time
        print(time.time())
        print(time.time())
    """)
    s.record()
    s.script.write_text("import time\nprint(time.time())\n")
    rep = s.replay("--force")
    assert rep.returncode == 3, rep.err
    assert "retrace: error:" in rep.err
