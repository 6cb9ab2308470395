"""Warnings issued by the real function of a boundary call (docs/EVENTS.md
WARNING): attributed to the program's line as in a plain run, recorded, and
issued again on replay through the program's warnings machinery (filters,
registries, showwarning, catch_warnings, the "error" action)."""
import sys

from retrace_testing import assert_faithful

# A plain-Python boundary function (a user config makes it one) that warns
# at its caller (stacklevel=2) and one that warns at its own line, with a
# category of its own.
WARNER = '''
import time
import warnings


class WarnerWarning(UserWarning):
    pass


def old(n):
    warnings.warn(f"old() is deprecated ({n})", DeprecationWarning, stacklevel=2)
    return time.time_ns() % 1000


def inner(n):
    warnings.warn(f"inner warns here ({n})", WarnerWarning)
    return n
'''

CONFIG = '''
[modules."warner"]
proxy = ["old", "inner"]
'''

PROGRAM = '''
import datetime
import os
import sys
import time
import warnings

import warner


def show(message, category, filename, lineno, file=None, line=None):
    print(f"shown {category.__name__} {os.path.basename(filename)}:{lineno} {str(message)[:48]}")


warnings.showwarning = show
warnings.simplefilter("default")


def c_call():
    # datetime.utcnow is a recorded C classmethod that warns from 3.12 on.
    if sys.version_info >= (3, 12):
        return datetime.datetime.utcnow()
    return time.time()


print("clock", c_call())
c_call()                      # same line: "default" shows it once
print("old", warner.old(1) >= 0)
print("old", warner.old(2) >= 0)
for _ in range(2):
    warner.old(3)
warner.inner(1)
warner.inner(2)               # same line in warner.py: shown once
with warnings.catch_warnings(record=True) as got:
    warnings.simplefilter("always")
    c_call()
    warner.old(4)
    warner.inner(3)
print("caught", [(w.category.__name__, os.path.basename(w.filename), w.lineno, str(w.message)[:30])
                 for w in got])
warnings.simplefilter("error")
for call in (c_call, lambda: warner.old(5), lambda: warner.inner(4)):
    try:
        call()
        print("returned")
    except Warning as exc:
        print("raised", type(exc).__name__, str(exc)[:40])
warnings.simplefilter("ignore")
c_call()
warner.old(6)
print("end")
'''


def _scenario(scenario):
    s = scenario(PROGRAM)
    s.write("warner.py", WARNER)
    s.write(".retrace/modules/warner.toml", CONFIG)
    return s


def _without_clock(out):
    return [line for line in out.splitlines() if not line.startswith("clock ")]


def test_warnings_from_boundary_calls_replay(scenario):
    s = _scenario(scenario)
    plain = s.plain()
    assert plain.returncode == 0, plain.err
    shown = [line for line in plain.out.splitlines() if line.startswith("shown ")]
    # The plain run shows each at the program's line (or warner.py's own).
    assert any("app.py:" in line and "old() is deprecated" in line for line in shown), plain.out
    assert any("warner.py:" in line and "WarnerWarning" in line for line in shown), plain.out
    if sys.version_info >= (3, 12):
        assert any("DeprecationWarning app.py:" in line and "utcnow" in line for line in shown), plain.out
    rec = assert_faithful(s)
    # Recording changes nothing the program sees: same warnings, same lines.
    assert _without_clock(rec.out) == _without_clock(plain.out), (
        f"--- plain ---\n{plain.out}\n--- record ---\n{rec.out}")
    assert rec.err == plain.err, rec.err


def test_warning_shown_in_a_call_is_an_event(scenario):
    s = _scenario(scenario)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    from retrace_testing import run
    events = run([sys.executable, "-m", "retracesoftware", "events", str(s.recording),
                  "--kind", "warning"], s.dir)
    assert events.returncode == 0, events.err
    assert "warner.WarnerWarning" in events.out, events.out
    assert "builtins.DeprecationWarning" in events.out, events.out
