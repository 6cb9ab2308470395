"""docs/COMPATIBILITY.md and tests/compat agree: every compat test has a row,
every row names an existing test, and every library the tests import is in
the [compat] extra."""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "COMPATIBILITY.md"
COMPAT = pathlib.Path(__file__).resolve().parent


def _compat_tests():
    names = set()
    for path in COMPAT.glob("test_*.py"):
        if path.name == "test_compatibility_table.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def _table_tests():
    if not DOC.exists():
        pytest.skip("docs/COMPATIBILITY.md is not in this tree (installed package only)")
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and "`test_" in line]
    return {re.search(r"`(test_\w+)`", row).group(1) for row in rows}


def test_every_compat_test_has_a_row_and_every_row_a_test():
    tests, rows = _compat_tests(), _table_tests()
    assert tests - rows == set(), f"compat tests missing from docs/COMPATIBILITY.md: {sorted(tests - rows)}"
    assert rows - tests == set(), f"rows naming no test in tests/compat: {sorted(rows - tests)}"


def test_required_libraries_are_in_the_compat_extra():
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("pyproject.toml is not in this tree")
    import tomllib
    extra = {re.split(r"[<>=!~ ]", d)[0].lower().replace("_", "-")
             for d in tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["compat"]}
    # import name -> distribution name where they differ
    dist = {"OpenSSL": "pyopenssl", "time_machine": "time-machine", "werkzeug": "flask"}
    required = set()
    for path in COMPAT.glob("test_*.py"):
        for call in re.findall(r"require\(([^)]*)\)", path.read_text()):
            for name in re.findall(r'"([\w.]+)"', call):
                required.add(dist.get(name, name).lower())
    assert required - extra == set(), f"not in the [compat] extra: {sorted(required - extra)}"
