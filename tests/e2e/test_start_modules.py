"""A replayed program starts with the ``sys.modules`` it was recorded with:
the same names in the same order (retrace's record and replay sessions
import different modules of their own before the program starts). A program
that walks ``sys.modules`` and makes a recorded call per module —
hypothesis's pytest plugin resolves each module's file (``lstat``), which
made the replay of a dateutil session diverge — replays faithfully, and
importing a module only the replay had loaded gives the same module."""
from retrace_testing import assert_faithful

WALK = """
import os, random, sys
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if path:
        os.stat(path)              # a recorded call per module, in sys.modules' order
print(len(sys.modules))
print(" ".join(sys.modules))
print(random.random())
"""

REIMPORT = """
import random, sys
import difflib, heapq             # the replay's own divergence report imports these
import retracesoftware
print(sorted(n for n in sys.modules if n in ("difflib", "heapq")), random.random())
"""


def test_walking_sys_modules_replays(scenario):
    assert_faithful(scenario(WALK), replays=2)


def test_importing_what_only_the_replay_loaded(scenario):
    assert_faithful(scenario(REIMPORT))
