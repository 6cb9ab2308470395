"""Foreign calls through ctypes (install/foreign.py): the default libc set
(configs/ctypes.toml) is recorded, result and written-through arguments;
other foreign calls are listed by inspect as unrecorded."""
import json
import sys

import pytest

from retrace_testing import assert_faithful, run

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc symbols")

PROGRAM = """
    import ctypes, ctypes.util
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    print(libc.time(None), libc.rand(), libc.getpid(), libc.getenv(b"RETRACE_TEST_VALUE"))
    ts = (ctypes.c_long * 2)()
    libc.clock_gettime(1, ctypes.byref(ts))
    print(list(ts))
    buf = ctypes.create_string_buffer(16)
    print(libc.getrandom(buf, 16, 0), buf.raw.hex())
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.cos.restype = ctypes.c_double
    libm.cos.argtypes = [ctypes.c_double]
    print(libm.cos(0.5), libc.abs(-3), libc.abs(-4))
"""


def test_libc_calls_replay_and_others_are_listed(scenario, tmp_path):
    s = scenario(PROGRAM)
    import random
    assert_faithful(s, env={"RETRACE_TEST_VALUE": str(random.random())})
    info = run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording), "--json"], tmp_path)
    summary = json.loads(info.stdout)
    assert summary["unrecorded_foreign_calls"] == ["c.abs", "m.cos"], summary
    text = run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording)], tmp_path).out
    assert "unrecorded foreign calls" in text and "m.cos" in text, text
    calls = run([sys.executable, "-m", "retracesoftware", "events", str(s.recording), "--kind", "call",
                 "--grep", "ctypes.c."], tmp_path).out
    for name in ("time", "rand", "getpid", "getenv", "clock_gettime", "getrandom"):
        assert f"ctypes.c.{name}(" in calls, calls
    assert "abs" not in calls and "cos" not in calls, calls
