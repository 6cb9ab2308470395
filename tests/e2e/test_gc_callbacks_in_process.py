"""``pytest --retrace`` installs and uninstalls our runtime around each
test's passes in one process: a ``gc.callbacks`` callback the project
registered before (hypothesis registers its timer once per process) stays
registered once and runs once per collection in every pass and between
them (install/gc_points.py `ProgramCallbacks` moves it into the program's
list and back)."""
from __future__ import annotations

import sys

from retrace_testing import run

FILES = {
    "pytest.ini": "[pytest]\naddopts = -p no:cacheprovider\n",
    "gcmark.py": """\
import gc
CALLS = []
def counter(phase, info):
    if phase == "start":
        CALLS.append(info["generation"])
gc.callbacks.append(counter)
""",
    "conftest.py": "import gcmark\n",
    "test_gc.py": """\
import gc
import gcmark

def once():
    n = len(gcmark.CALLS)
    gc.collect()
    return len(gcmark.CALLS) - n, gc.callbacks.count(gcmark.counter)

def test_one():
    assert once() == (1, 1)

def test_two():
    assert once() == (1, 1)

def test_three():
    assert once() == (1, 1)
""",
}


def test_a_callback_registered_before_runs_once_per_collection(tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    plain = run([sys.executable, "-m", "pytest", "-q"], tmp_path, timeout=300)
    assert plain.returncode == 0 and "3 passed" in plain.out, plain.out
    result = run([sys.executable, "-m", "pytest", "-q", "-rA", "--retrace"], tmp_path, timeout=600)
    assert result.returncode == 0 and "3 passed" in result.out, result.out + result.err
