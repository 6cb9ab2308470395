"""Every utils test runs against both backends, imported directly (the
`backend` fixture and retrace_testing.load_backend: one skip rule for every
layer, see tests/README.md)."""
import functools

import pytest

from retrace_testing import load_backend as _load

load_backend = functools.partial(_load, "utils")


@pytest.fixture
def u(backend):
    return load_backend(backend)
