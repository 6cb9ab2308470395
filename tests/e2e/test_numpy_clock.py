"""numpy's clock-based values replay (install/numpy_support.py); skipped
(visibly) where numpy is not installed."""
import pytest

from retrace_testing import assert_faithful


def test_datetime64_now_and_today(scenario):
    pytest.importorskip("numpy", reason="numpy is not installed in this Python: datetime64('now') not tested")
    s = scenario("""
        import time
        import numpy as np
        a = np.datetime64("now")
        time.sleep(0.002)
        print(repr(a), repr(np.datetime64("NOW", "us")), repr(np.datetime64("today")))
        print(np.datetime64("2024-01-01"), np.datetime64(5, "D"), a.dtype)
        rng = np.random.default_rng()
        print(rng.integers(0, 1000, 3))
    """)
    assert_faithful(s)
