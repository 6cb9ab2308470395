"""pytest plugin: ``pytest --retrace`` records each test and replays it at once.

Registered through the ``pytest11`` entry point. It does nothing unless
``--retrace`` is given or a conftest.py calls
``retracesoftware.install.install_for_pytest()``.
"""
from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("retrace", "retracesoftware record/replay")
    group.addoption("--retrace", action="store_true", default=False,
                    help="record every test and replay it at once; a test whose replay "
                         "diverges from its recording fails")


def pytest_configure(config):
    from retracesoftware.install import testing

    if config.getoption("retrace", False):
        testing.enable_everywhere()
    config.pluginmanager.register(testing.TestRunner(), "retracesoftware-testrunner")
