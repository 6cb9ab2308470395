"""Test helpers shared by the suite (importable as `retrace_testing`).

End-to-end helpers: a program as a string, run plain / recorded / replayed
through the real CLI in a subprocess, as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 120


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def _env(extra=None):
    env = dict(os.environ)
    env.pop("PYTHONHASHSEED", None)
    env.pop("RETRACE", None)
    # `python` in a recorded command is the test interpreter, as in an activated venv.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def run(argv, cwd, env=None, stdin=None, timeout=TIMEOUT) -> Run:
    proc = subprocess.run(argv, cwd=cwd, env=_env(env), input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


class Scenario:
    """A program in a temp dir, runnable plain, recorded and replayed."""

    def __init__(self, tmp_path: Path, source: str, name: str = "app.py"):
        self.dir = tmp_path
        self.script = tmp_path / name
        self.script.write_text(textwrap.dedent(source))
        self.recording = tmp_path / "run.bin"

    def write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def plain(self, *args, env=None, stdin=None) -> Run:
        return run([sys.executable, self.script.name, *args], self.dir, env, stdin)

    def record(self, *args, env=None, stdin=None, command=None, options=()) -> Run:
        cmd = command if command is not None else ["python", self.script.name, *args]
        return run([sys.executable, "-m", "retracesoftware", "--recording", str(self.recording),
                    *options, "--", *cmd], self.dir, env, stdin)

    def replay(self, *options, env=None, stdin=None, cwd=None) -> Run:
        return run([sys.executable, "-m", "retracesoftware", "--recording", str(self.recording),
                    *options], cwd or self.dir, env, stdin)


PLAIN_TRIES = 4


def assert_faithful(scenario: Scenario, *args, env=None, replays=1, check_plain_differs=True,
                    stdin=None, before_replay=None, command=None, expected_code=None) -> Run:
    """Record, replay; stdout bytes and exit code must match. Returns the record run."""
    if check_plain_differs:
        # Some plain run must print something else than the first, or the
        # scenario cannot tell a faithful replay from a plain rerun. Up to
        # PLAIN_TRIES runs: a scenario whose outputs coincide by chance
        # (random.choice of 100 lines: 1 in 100) must not fail the check.
        a = scenario.plain(*args, env=env, stdin=stdin)
        for _ in range(PLAIN_TRIES - 1):
            if scenario.plain(*args, env=env, stdin=stdin).stdout != a.stdout:
                break
        else:
            raise AssertionError(
                f"{PLAIN_TRIES} plain runs printed the same output, so this scenario cannot "
                "detect an unfaithful replay:\n" + a.out + a.err)
    rec = scenario.record(*args, env=env, stdin=stdin, command=command)
    assert rec.stdout or rec.returncode == expected_code, rec.err
    if expected_code is not None:
        assert rec.returncode == expected_code, rec.err
    assert "retrace: error" not in rec.err, rec.err
    if before_replay is not None:
        before_replay()
    for _ in range(replays):
        rep = scenario.replay(env=env)
        assert rep.stdout == rec.stdout, (
            f"replay printed something else.\n--- record ---\n{rec.out}\n--- replay ---\n{rep.out}\n"
            f"--- replay stderr ---\n{rep.err}")
        assert rep.returncode == rec.returncode, rep.err
    return rec




def require(*names):
    """Import each module or skip the test, naming the extra that installs
    it (tests/compat: libraries from the optional ``[compat]`` extra)."""
    import pytest
    for name in names:
        pytest.importorskip(name, reason=f"{name} is not installed (pip install '.[compat]')")


# ---- the one backend rule for the layer tests (tests/README.md) ----
BACKENDS = ("python", "cpp")
_BACKEND_MODULES = {
    "functional": ("retracesoftware.functional._python", "retracesoftware.functional._functional"),
    "utils": ("retracesoftware.utils._python", "retracesoftware.utils._utils"),
    "stream": ("retracesoftware.stream._python", "retracesoftware.stream._stream"),
}


def load_backend(layer: str, which: str):
    """Layer *layer*'s backend module *which* ("python" or "cpp"), imported
    directly. The C++ one is skipped under ``RETRACE_BACKEND=python`` (the
    cpp run tests it) and when it cannot be imported, unless
    ``RETRACE_BACKEND=cpp``: then a missing or broken extension fails."""
    import importlib

    import pytest
    forced = os.environ.get("RETRACE_BACKEND", "").strip().lower()
    if which == "cpp" and forced == "python":
        pytest.skip("C++ backend: tested in the RETRACE_BACKEND=cpp run")
    try:
        return importlib.import_module(_BACKEND_MODULES[layer][BACKENDS.index(which)])
    except ImportError as exc:
        if which == "cpp" and forced != "cpp":
            pytest.skip(f"C++ extension unavailable and RETRACE_BACKEND != 'cpp' ({exc})")
        raise
