"""pytest plugin: ``pytest --retrace`` records each test and replays it at once;
``pytest --retrace-record PATH`` records the whole session (install/pytest_session.py).

Registered through the ``pytest11`` entry point. It does nothing unless
``--retrace`` / ``--retrace-record`` is given (or ``RETRACE_RECORD`` is set),
a conftest.py calls ``retracesoftware.install.install_for_pytest()``, or the
session runs under the CLI (then each test report is marked on the tape).
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("retrace", "retracesoftware record/replay")
    group.addoption("--retrace", action="store_true", default=False,
                    help="record every test and replay it at once; a test whose replay "
                         "diverges from its recording fails (a determinism check)")
    group.addoption("--retrace-record", metavar="PATH", default=None,
                    help="record the whole session (children and xdist workers included) to PATH "
                         "(a directory: PATH/session.bin); env RETRACE_RECORD")
    group.addoption("--retrace-keep", choices=("failed", "always"), default=None,
                    help="keep the session recording only when the session failed (default) "
                         "or always; env RETRACE_KEEP")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    from retracesoftware.install import pytest_session
    pytest_session.record_session_if_asked(early_config)


def pytest_configure(config):
    from retracesoftware.install import session_base as session_mod
    from retracesoftware.install import testing

    if getattr(session_mod, "current_session", None) is not None:
        # A session recorded or replayed by the CLI (pytest --retrace-record).
        from retracesoftware.install import pytest_session
        reporter = pytest_session.SessionReporter
        if not hasattr(reporter.pytest_testnodeready, "pytest_impl"):
            # xdist's hook: unknown to pytest when xdist is not installed. Marked
            # here, not where pytest_session is defined: the replay imports that
            # module before the program, which must import pytest itself.
            reporter.pytest_testnodeready = pytest.hookimpl(optionalhook=True)(reporter.pytest_testnodeready)
        config.pluginmanager.register(reporter(config), "retracesoftware-session")
        return
    if config.getoption("retrace", False):
        testing.enable_everywhere()
    config.pluginmanager.register(testing.TestRunner(), "retracesoftware-testrunner")
