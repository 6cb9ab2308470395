"""The .pth hook: with RETRACE=1 every python in the venv records itself."""
import os
import subprocess
import sys
import sysconfig
import textwrap

from retrace_testing import run


def _venv_with_retrace(tmp_path):
    """A brand-new venv that can import the retracesoftware under test."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # Sorted before retracesoftware-autoenable.pth, so the package is importable there.
    with open(os.path.join(purelib, "aaa-retrace-under-test.pth"), "w") as fh:
        fh.write(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_pth_hook_records_and_replays(tmp_path):
    python = _venv_with_retrace(tmp_path)
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent("""
        import random, time, sys
        print("hooked", random.random(), time.time(), sys.argv[1:])
    """))
    enabled = run([str(python), "-m", "retracesoftware", "enable-hook"], tmp_path)
    assert enabled.returncode == 0, enabled.err
    plain = run([str(python), "app.py", "x"], tmp_path)
    assert plain.returncode == 0 and not list(tmp_path.glob("*.bin")), "recorded without RETRACE=1"
    rec = run([str(python), "app.py", "x"], tmp_path,
              env={"RETRACE": "1", "RETRACE_RECORDING": str(tmp_path / "hook-{pid}.bin")})
    assert rec.returncode == 0, rec.err
    recordings = list(tmp_path.glob("hook-*.bin"))
    assert len(recordings) == 1, (recordings, rec.err)
    rep = run([str(python), "-m", "retracesoftware", "--recording", str(recordings[0])], tmp_path)
    assert rep.returncode == 0, rep.err
    assert rep.stdout == rec.stdout
    assert b"hooked" in rec.stdout and rec.stdout != plain.stdout
    # pip and our own commands are never recorded.
    before = set(tmp_path.glob("*.bin"))
    run([str(python), "-m", "retracesoftware", "inspect", str(recordings[0])], tmp_path,
        env={"RETRACE": "1", "RETRACE_RECORDING": str(tmp_path / "own-{pid}.bin")})
    assert set(tmp_path.glob("*.bin")) == before
    disabled = run([str(python), "-m", "retracesoftware", "disable-hook"], tmp_path)
    assert disabled.returncode == 0
    again = run([str(python), "app.py"], tmp_path,
                env={"RETRACE": "1", "RETRACE_RECORDING": str(tmp_path / "after-{pid}.bin")})
    assert again.returncode == 0 and not list(tmp_path.glob("after-*.bin"))


def test_pth_hook_recording_path_alone_and_recorded_sys_path(tmp_path):
    # RETRACE_RECORDING alone turns recording on; the replay sees the
    # recorded sys.path, PYTHONPATH entries and python3XX.zip included.
    python = _venv_with_retrace(tmp_path)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "helper_mod.py").write_text("import random\nVALUE = random.random()\n")
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent("""
        import sys, helper_mod
        print(sys.path, helper_mod.VALUE)
    """))
    assert run([str(python), "-m", "retracesoftware", "enable-hook"], tmp_path).returncode == 0
    rec = run([str(python), "app.py"], tmp_path,
              env={"PYTHONPATH": str(extra), "RETRACE_RECORDING": str(tmp_path / "alone-{pid}.bin")})
    assert rec.returncode == 0, rec.err
    recordings = list(tmp_path.glob("alone-*.bin"))
    assert len(recordings) == 1, (recordings, rec.err)
    assert str(extra).encode() in rec.stdout
    rep = run([str(python), "-m", "retracesoftware", "--recording", str(recordings[0])], tmp_path)
    assert rep.returncode == 0, rep.err
    assert rep.stdout == rec.stdout, (rec.out, rep.out, rep.err)
    # inspect: the hook cannot see the exit status; it says so, not "None"
    shown = run([str(python), "-m", "retracesoftware", "inspect", str(recordings[0])], tmp_path)
    assert shown.returncode == 0 and "exit code None" not in shown.out, shown.out + shown.err
    assert "exit code not recorded" in shown.out, shown.out
