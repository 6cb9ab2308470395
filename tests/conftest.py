"""Suite-wide set-up. Tests import the *installed* package (importlib mode);
only this folder goes on sys.path, for the shared helpers in retrace_testing.py."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from retrace_testing import BACKENDS  # noqa: E402


@pytest.fixture(params=BACKENDS)
def backend(request):
    """"python" then "cpp": the layer fixtures (F, u, impl) load that backend
    with retrace_testing.load_backend (one skip rule for every layer)."""
    return request.param


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.slow` tests are opt-in, everywhere: run them with `-m slow`."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow; run with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
