"""The chooser in retracesoftware.functional, exercised in fresh interpreters.

Each scenario runs in a subprocess so RETRACE_BACKEND and a disabled
extension (a ``None`` entry in sys.modules, which makes its import raise
ImportError) affect only that interpreter.
"""
import importlib
import json
import os
import subprocess
import sys

import pytest

EXTENSION = "retracesoftware.functional._functional"


def run_python(code, backend, tmp_path):
    env = dict(os.environ)
    env.pop("RETRACE_BACKEND", None)
    if backend is not None:
        env["RETRACE_BACKEND"] = backend
    # Run outside the repository so no source folder can shadow the install.
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


REPORT = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    {prelude}
    import retracesoftware.functional as F
    import retracesoftware.functional as F2
    import importlib; importlib.import_module("retracesoftware.functional")
print(json.dumps({{
    "backend": F.BACKEND,
    "reason": F.BACKEND_REASON,
    "impl": F._impl.__name__,
    "compose_module": type(F.compose(str)).__module__,
    "slugs": [str(w.message).split("]")[0].lstrip("[") for w in caught],
    "categories": [w.category.__name__ for w in caught],
}}))
"""

DISABLE_EXTENSION = f"import sys; sys.modules[{EXTENSION!r}] = None"


def report(backend, tmp_path, prelude="pass"):
    result = run_python(REPORT.format(prelude=prelude), backend, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cpp_forced():
    return os.environ.get("RETRACE_BACKEND", "").strip().lower() == "cpp"


def cpp_available():
    try:
        importlib.import_module(EXTENSION)
        return True
    except ImportError:
        return False


def test_forced_python_backend(tmp_path):
    info = report("python", tmp_path)
    assert info["backend"] == "python"
    assert info["impl"] == "retracesoftware.functional._python"
    assert info["compose_module"] == "retracesoftware.functional._python"
    assert "no-cpp-functional" not in info["slugs"]


def test_forced_cpp_backend(tmp_path):
    if not cpp_available() and not cpp_forced():
        pytest.skip("C++ extension unavailable and RETRACE_BACKEND != 'cpp'")
    info = report("cpp", tmp_path)
    assert info["backend"] == "cpp"
    assert info["impl"] == EXTENSION
    assert info["compose_module"] == EXTENSION
    assert "forced" in info["reason"]


def test_unforced_default_prefers_cpp(tmp_path):
    if not cpp_available() and not cpp_forced():
        pytest.skip("C++ extension unavailable and RETRACE_BACKEND != 'cpp'")
    info = report(None, tmp_path)
    assert info["backend"] == "cpp"
    assert "no-cpp-functional" not in info["slugs"]


def test_missing_extension_falls_back_and_warns_once(tmp_path):
    info = report(None, tmp_path, prelude=DISABLE_EXTENSION)
    assert info["backend"] == "python"
    assert info["impl"] == "retracesoftware.functional._python"
    assert info["slugs"].count("no-cpp-functional") == 1
    index = info["slugs"].index("no-cpp-functional")
    assert info["categories"][index] == "BackendWarning"
    assert info["reason"].startswith("fallback:")


def test_forced_cpp_with_missing_extension_is_a_hard_import_error(tmp_path):
    code = f"{DISABLE_EXTENSION}\nimport retracesoftware.functional\n"
    result = run_python(code, "cpp", tmp_path)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError:"), result.stderr
    assert EXTENSION in last_line
    assert "RETRACE_BACKEND=cpp" in last_line


def test_public_names_are_the_chosen_backends(tmp_path):
    code = (
        "import retracesoftware.functional as F\n"
        "assert all(getattr(F, n) is getattr(F._impl, n) for n in F.__all__)\n"
        "print(len(F.__all__))\n"
    )
    result = run_python(code, "python", tmp_path)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 20
