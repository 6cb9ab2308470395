"""Helpers for the stdlib coverage scenarios (tests/e2e/test_stdlib_*.py).

`assert_offline_faithful` records a program through the CLI, then replays it
*offline*: with networking unavailable (a fresh network namespace through
``unshare -rn`` where the sandbox allows it) and, optionally, with data files
deleted; it also checks that the replay neither created nor removed a file in
the scenario's directory.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from retrace_testing import Run, Scenario, assert_faithful, run


@functools.lru_cache(maxsize=None)
def offline_prefix() -> tuple:
    """Argv prefix that runs a command without any network (not even loopback)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    try:
        probe = subprocess.run([unshare, "-rn", sys.executable, "-c",
                                "import socket; s = socket.socket(); "
                                "s.connect_ex(('127.0.0.1', 9)); print('ok')"],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ()
    return (unshare, "-rn") if probe.returncode == 0 else ()


def has_offline() -> bool:
    return bool(offline_prefix())


def replay_offline(scenario: Scenario, env=None) -> Run:
    return run([*offline_prefix(), sys.executable, "-m", "retracesoftware",
                "--recording", str(scenario.recording)], scenario.dir, env)


def _snapshot(directory) -> dict:
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            found[os.path.relpath(path, directory)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def assert_offline_faithful(scenario: Scenario, *args, env=None, delete=(), replays=1,
                            check_plain_differs=True, expected_code=None) -> Run:
    """Record; delete *delete* (glob patterns relative to the scenario); replay offline
    *replays* times: stdout bytes and exit code equal, no file made or removed."""
    rec = assert_faithful(scenario, *args, env=env, replays=0,
                          check_plain_differs=check_plain_differs, expected_code=expected_code)
    for pattern in delete:
        for path in scenario.dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    for _ in range(replays):
        before = _snapshot(scenario.dir)
        rep = replay_offline(scenario, env=env)
        assert rep.stdout == rec.stdout, (
            f"offline replay printed something else.\n--- record ---\n{rec.out}\n"
            f"--- replay ---\n{rep.out}\n--- replay stderr ---\n{rep.err}")
        assert rep.returncode == rec.returncode, rep.err
        assert "retrace: error" not in rep.err, rep.err
        after = _snapshot(scenario.dir)
        changed = {k for k in before.keys() | after.keys()
                   if k != "__pycache__" and not k.startswith("__pycache__" + os.sep)
                   and before.get(k) != after.get(k)}
        assert not changed, f"replay touched files: {sorted(changed)}"
    return rec
