"""Compatibility scenarios: real libraries recorded through the CLI and
replayed byte for byte. Each test needs its library from the optional
``[compat]`` extra (``pip install '.[compat]'``) and skips with a visible
reason when it is absent. docs/COMPATIBILITY.md lists them (checked by
test_compatibility_table.py)."""
import pytest

from retrace_testing import Scenario


@pytest.fixture
def scenario(tmp_path):
    def make(source, name="app.py"):
        return Scenario(tmp_path, source, name)
    return make

