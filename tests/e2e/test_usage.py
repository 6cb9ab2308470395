"""Bad usage and bad recordings: one clear line and the documented exit code."""
import sys

from retrace_testing import run


def cli(tmp_path, *args):
    return run([sys.executable, "-m", "retracesoftware", *args], tmp_path)


def test_help(tmp_path):
    r = cli(tmp_path, "--help")
    assert r.returncode == 0 and b"--recording" in r.stdout


def test_missing_dashdash(tmp_path):
    (tmp_path / "app.py").write_text("print(1)\n")
    r = cli(tmp_path, "--recording", "x.bin", "app.py")
    assert r.returncode == 2
    assert r.err.startswith("retrace: error:") and "--" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_missing_script(tmp_path):
    r = cli(tmp_path, "--recording", "x.bin", "--", "python", "nope.py")
    assert r.returncode == 2
    assert "nope.py" in r.err
    assert not (tmp_path / "x.bin").exists(), "a recording was left half-written"


def test_missing_recording(tmp_path):
    r = cli(tmp_path, "--recording", "missing.bin")
    assert r.returncode == 4
    assert "missing.bin" in r.err and len(r.err.strip().splitlines()) == 1


def test_not_a_recording(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"this is not a recording at all\n" * 10)
    r = cli(tmp_path, "--recording", "junk.bin")
    assert r.returncode == 4, r.err
    assert r.err.startswith("retrace: error:") and "Traceback" not in r.err


def test_empty_recording(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    r = cli(tmp_path, "--recording", "empty.bin")
    assert r.returncode == 4, r.err
    assert "Traceback" not in r.err


def test_unknown_option(tmp_path):
    r = cli(tmp_path, "--recordin", "x.bin")
    assert r.returncode == 2


def test_changed_source_is_refused(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("import time\nprint(time.time())\n")
    rec = cli(tmp_path, "--recording", "r.bin", "--", "python", "app.py")
    assert rec.returncode == 0, rec.err
    app.write_text("import time\nprint('changed', time.time())\n")
    rep = cli(tmp_path, "--recording", "r.bin")
    assert rep.returncode == 4, rep.err
    assert "changed" in rep.err and "--force" in rep.err


def test_interpreter_options_in_effect_are_accepted(tmp_path):
    # `python -O -m retracesoftware ... -- python -O app.py`: the option is in
    # effect in the interpreter that runs the program, so it is honoured.
    (tmp_path / "app.py").write_text("import sys\nassert False, 'asserts run'\nprint(sys.flags.optimize)\n")
    r = run([sys.executable, "-O", "-m", "retracesoftware", "--recording", "o.bin", "--",
             "python", "-O", "app.py"], tmp_path)
    assert r.returncode == 0 and r.stdout == b"1\n", r.err
    rep = run([sys.executable, "-O", "-m", "retracesoftware", "--recording", "o.bin"], tmp_path)
    assert rep.returncode == 0 and rep.stdout == b"1\n", rep.err


def test_interpreter_option_not_in_effect_says_where_to_put_it(tmp_path):
    (tmp_path / "app.py").write_text("print(1)\n")
    r = cli(tmp_path, "--recording", "x.bin", "--", "python", "-O", "app.py")
    assert r.returncode == 2, r.err
    assert "'-O' is not in effect here: put it before -m retracesoftware" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    r = cli(tmp_path, "--recording", "x.bin", "--", "python", "-i", "app.py")
    assert r.returncode == 2 and "'-i' is not supported under retrace" in r.err, r.err
