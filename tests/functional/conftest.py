"""Every functional test runs against both backends, imported directly
(the `backend` fixture and retrace_testing.load_backend: one skip rule for
every layer, see tests/README.md)."""
import pytest

from retrace_testing import BACKENDS, load_backend


@pytest.fixture
def F(backend):
    """The backend module under test (``_python`` or ``_functional``)."""
    return load_backend("functional", backend)


@pytest.fixture
def both():
    """Both backend modules, as a dict keyed by backend name."""
    return {name: load_backend("functional", name) for name in BACKENDS}
