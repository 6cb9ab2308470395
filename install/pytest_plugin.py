"""pytest plugin: ``pytest --retrace`` records each test and replays it at once.

Registered through the ``pytest11`` entry point; inactive unless ``--retrace``
is given (or ``install_for_pytest()`` is called from a conftest.py).
"""
from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("retrace", "retracesoftware record/replay")
    group.addoption("--retrace", action="store_true", default=False,
                    help="record every test and replay it at once; a test whose replay "
                         "diverges from its recording fails")


def pytest_configure(config):
    if config.getoption("retrace", False):
        from retracesoftware.install.testing import TestRunner
        config.pluginmanager.register(TestRunner(), "retracesoftware-testrunner")
