"""Every utils test runs against both backends, imported directly.

``RETRACE_BACKEND=python`` skips the C++ one (the extension may be absent on
purpose); otherwise a C++ backend that fails to import fails the tests.
"""
import importlib
import os

import pytest

BACKENDS = ("python", "cpp")
_MODULES = {"python": "retracesoftware.utils._python", "cpp": "retracesoftware.utils._utils"}


def load_backend(name):
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        if name == "cpp" and os.environ.get("RETRACE_BACKEND", "").lower() == "python":
            pytest.skip(f"C++ backend not tested under RETRACE_BACKEND=python ({exc})")
        raise


@pytest.fixture(params=BACKENDS)
def u(request):
    return load_backend(request.param)
