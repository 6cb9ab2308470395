import pytest

from retrace_testing import Scenario


@pytest.fixture
def scenario(tmp_path):
    def make(source, name="app.py"):
        return Scenario(tmp_path, source, name)
    return make
