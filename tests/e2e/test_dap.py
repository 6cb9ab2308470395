"""The DAP adapter (``python -m retracesoftware dap``) driven over pipes by a
test client, on recorded programs: breakpoints, evaluate, stepBack,
reverseContinue, output events and the exit code (issue 18)."""
import os
import re
import sys

import pytest

from dap_client import DapClient
from retrace_testing import _env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the replay re-executes itself (execve)")


def _client(s):
    return DapClient(s.dir, env=_env())


LOOP = """
    import random
    values = []
    for i in range(4):
        v = random.randint(1, 10**9)
        values.append(v)
        print("value", i, v)
    print("sum", sum(values))
    raise SystemExit(7)
"""


def test_dap_loop_breakpoint_evaluate_step_back_reverse_continue(scenario):
    s = scenario(LOOP)
    rec = s.record()
    assert rec.returncode == 7, rec.err
    recorded = {int(i): v for i, v in re.findall(r"value (\d) (\d+)", rec.out)}
    assert len(recorded) == 4
    dap = _client(s)
    try:
        dap.start(s.recording, breakpoints=[6], source=s.script)
        caps = dap.capabilities
        for cap in ("supportsStepBack", "supportsConfigurationDoneRequest", "supportsRestartRequest",
                    "supportsEvaluateForHovers", "supportsConditionalBreakpoints"):
            assert caps.get(cap) is True, caps
        stop = dap.stopped()
        assert stop["reason"] == "breakpoint"
        tid = stop["threadId"]
        dap.request("continue", {"threadId": tid})
        dap.stopped()
        dap.request("continue", {"threadId": tid})
        stop = dap.stopped()
        frame = dap.top_frame(stop["threadId"])
        assert frame["line"] == 6
        assert dap.evaluate("i", frame["id"]) == "2"
        assert dap.evaluate("v", frame["id"]) == recorded[2]      # the recorded value
        threads = dap.request("threads")["body"]["threads"]
        assert [t["id"] for t in threads] == [1]

        # stepBack: the line before, where v still holds the previous iteration's value.
        dap.request("stepBack", {"threadId": tid})
        stop = dap.stopped()
        frame = dap.top_frame(stop["threadId"])
        assert frame["line"] == 5
        assert dap.evaluate("v", frame["id"]) == recorded[1]
        # reverseContinue: the previous breakpoint hit, the previous iteration.
        dap.request("reverseContinue", {"threadId": tid})
        stop = dap.stopped()
        frame = dap.top_frame(stop["threadId"])
        assert frame["line"] == 6
        assert dap.evaluate("i", frame["id"]) == "1"
        assert dap.evaluate("v", frame["id"]) == recorded[1]
        assert dap.evaluate("values", frame["id"]) == repr([int(recorded[0])])   # before line 6 ran

        dap.set_breakpoints(s.script, [])
        dap.request("continue", {"threadId": tid})
        exited = dap.wait_event("exited")
        assert exited["body"]["exitCode"] == 7
        dap.wait_event("terminated")
        assert dap.output("stdout") == rec.out
        assert "retrace: error" not in dap.output("stderr")
    finally:
        dap.close()
    # After the debugging session the replay still matches the recording.
    rep = s.replay()
    assert rep.stdout == rec.stdout and rep.returncode == 7, rep.err


THREADS = """
    import random, sys, threading
    results = {}
    def worker(n):
        x = random.random()
        results[n] = x
        print("worker", n, x)
    for n in range(3):
        t = threading.Thread(target=worker, args=(n,))
        t.start()
        t.join()
    print("done", len(results))
"""


def test_dap_breakpoint_in_a_worker_thread(scenario):
    s = scenario(THREADS)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    recorded = {int(n): x for n, x in re.findall(r"worker (\d) (\S+)", rec.out)}
    dap = _client(s)
    try:
        dap.start(s.recording, breakpoints=[6], source=s.script)
        stop = dap.stopped()
        assert stop["reason"] == "breakpoint"
        first = stop["threadId"]
        assert first != 1, "stopped in the main thread"
        dap.request("continue", {"threadId": first})
        stop = dap.stopped()
        second = stop["threadId"]
        assert second not in (1, first)
        frame = dap.top_frame(second)
        assert dap.evaluate("n", frame["id"]) == "1"
        assert dap.evaluate("x", frame["id"]) == recorded[1]
        threads = {t["id"] for t in dap.request("threads")["body"]["threads"]}
        assert {1, first, second} <= threads and len(threads) == 4, threads   # every recorded thread

        dap.request("reverseContinue", {"threadId": second})
        stop = dap.stopped()
        assert stop["threadId"] == first
        frame = dap.top_frame(first)
        assert dap.evaluate("n", frame["id"]) == "0"
        assert dap.evaluate("x", frame["id"]) == recorded[0]
        dap.request("stepBack", {"threadId": first})
        stop = dap.stopped()
        frame = dap.top_frame(stop["threadId"])
        assert frame["line"] == 5 and stop["threadId"] == first

        dap.set_breakpoints(s.script, [])
        dap.request("continue", {"threadId": first})
        assert dap.wait_event("exited")["body"]["exitCode"] == 0
        assert dap.output("stdout") == rec.out
    finally:
        dap.close()
    rep = s.replay()
    assert rep.stdout == rec.stdout and rep.returncode == 0, rep.err


LOGGING = """
    import logging, random
    logging.basicConfig(format="%(levelname)s:%(message)s")
    for i in range(3):
        x = random.random()
        try:
            open("/nonexistent-dir/%d-%s" % (i, x))
        except OSError:
            logging.exception("attempt %d failed", i)
    print("done")
"""


@pytest.mark.skipif(os.environ.get("RETRACE_BACKEND") == "python",
                    reason="the Python backend's gateways are Python frames, in the record's tracebacks too")
def test_dap_program_logging_a_caught_exception(scenario):
    s = scenario(LOGGING)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    recorded = re.findall(r"nonexistent-dir/(\d)-([0-9.e-]+)'", rec.err)
    dap = _client(s)
    try:
        dap.start(s.recording, breakpoints=[9], source=s.script)
        tid = dap.stopped()["threadId"]
        dap.request("continue", {"threadId": tid})
        dap.stopped()
        dap.request("continue", {"threadId": tid})
        stop = dap.stopped()
        frame = dap.top_frame(stop["threadId"])
        assert dap.evaluate("i", frame["id"]) == "2"
        assert dap.evaluate("repr(x)", frame["id"]) == repr(recorded[2][1])
        dap.request("stepBack", {"threadId": tid})
        frame = dap.top_frame(dap.stopped()["threadId"])
        # PYVERSIONS: 3.13 may report no line event for "except OSError:"
        # (the previous line of the frame is then the failing open()); seen
        # both ways on 3.13.0.
        assert frame["line"] in ((7, 8) if sys.version_info >= (3, 13) else (8,))
        dap.request("reverseContinue", {"threadId": tid})
        frame = dap.top_frame(dap.stopped()["threadId"])
        assert frame["line"] == 9
        assert dap.evaluate("i", frame["id"]) == "1"
        assert dap.evaluate("repr(x)", frame["id"]) == repr(recorded[1][1])
        dap.set_breakpoints(s.script, [])
        dap.request("continue", {"threadId": tid})
        assert dap.wait_event("exited")["body"]["exitCode"] == 0
        assert dap.output("stdout") == rec.out
        assert dap.output("stderr") == rec.err
    finally:
        dap.close()
    rep = s.replay()
    assert rep.stdout == rec.stdout and rep.stderr == rec.stderr and rep.returncode == 0, rep.err


def test_dap_divergence_stops_with_its_message(scenario):
    s = scenario("""
        import time
        print(time.time())
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    s.script.write_text("import time\nprint(time.monotonic())\n")
    dap = _client(s)
    try:
        dap.request("initialize", {"adapterID": "retrace"})
        dap.request("launch", {"recording": str(s.recording), "force": True})
        dap.wait_event("initialized")
        dap.request("configurationDone")
        stop = dap.stopped()
        assert stop["reason"] == "exception"
        assert stop["text"].startswith("replay diverged at event"), stop
        assert "\n" not in stop["text"]
        frame = dap.top_frame(stop["threadId"])
        assert frame["line"] == 2 and frame["source"]["path"].endswith("app.py")
        dap.request("continue", {"threadId": stop["threadId"]})
        assert dap.wait_event("exited")["body"]["exitCode"] == 3
    finally:
        dap.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checkpoints need Linux (prctl)")
@pytest.mark.parametrize("checkpoints", ["on", "off"])
def test_dap_going_back_resumes_checkpoints_or_re_executes(scenario, tmp_path, checkpoints):
    # With checkpoints (the default) every trip back resumes a forked
    # checkpoint; with RETRACE_CHECKPOINTS=0 it re-executes the replay from
    # the start. Same stops, same values, same output events either way, and
    # no process of the session left after the client disconnects.
    from dap_client import _assert_none_left
    s = scenario(LOOP)
    rec = s.record()
    assert rec.returncode == 7, rec.err
    recorded = {int(i): v for i, v in re.findall(r"value (\d) (\d+)", rec.out)}
    log = tmp_path / "debugger.log"
    env = dict(_env(), RETRACE_DEBUGGER_LOG=str(log))
    if checkpoints == "off":
        env["RETRACE_CHECKPOINTS"] = "0"
    dap = DapClient(s.dir, env=env)
    try:
        dap.start(s.recording, breakpoints=[6], source=s.script)
        tid = dap.stopped()["threadId"]
        for _ in range(3):
            dap.request("continue", {"threadId": tid})
            dap.stopped()
        for i in (2, 1, 0):                                   # back, hit by hit
            dap.request("reverseContinue", {"threadId": tid})
            frame = dap.top_frame(dap.stopped()["threadId"])
            assert frame["line"] == 6
            assert dap.evaluate("i", frame["id"]) == str(i)
            assert dap.evaluate("v", frame["id"]) == recorded[i]
        dap.request("stepBack", {"threadId": tid})
        frame = dap.top_frame(dap.stopped()["threadId"])
        assert frame["line"] == 5
        dap.request("continue", {"threadId": tid})           # forward again: the same hit (i == 0)
        frame = dap.top_frame(dap.stopped()["threadId"])
        assert dap.evaluate("i", frame["id"]) == "0"
        dap.set_breakpoints(s.script, [])
        dap.request("continue", {"threadId": tid})
        assert dap.wait_event("exited")["body"]["exitCode"] == 7
        assert dap.output("stdout") == rec.out                # each byte once
    finally:
        dap.close()
    text = log.read_text()
    if checkpoints == "on":
        assert "resuming checkpoint" in text and "re-executing" not in text, text
        # Every checkpoint is a fork of a one-thread process: the agent's
        # reader thread is stopped first. A libc fork while it waited for
        # the GIL left the copy waiting in drop_gil for a thread it does
        # not have (the "DAP adapter silent" hang under load).
        forked_from = re.findall(r"checkpoint #\d+ taken .*forked from (\d+) thread", text)
        assert forked_from and set(forked_from) == {"1"}, text
    else:
        assert "re-executing" in text and "resuming checkpoint" not in text, text
    _assert_none_left(str(s.recording))
