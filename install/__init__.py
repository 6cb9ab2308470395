"""retracesoftware.install — configs → patches, import hooks, threads, pytest.

See README.md in this folder. Public entry points::

    install_for_pytest()        # in a conftest.py: record+replay each test below it
    TestRunner                  # the same, for one callable
    Installer, load_config      # the machinery the CLI uses
"""
from retracesoftware.install.testing import TestRunner, install_for_pytest  # noqa: F401


def __getattr__(name):
    if name == "Installer":
        from retracesoftware.install.installer import Installer
        return Installer
    if name == "load_config":
        from retracesoftware.install.config import load_config
        return load_config
    if name in ("stream_writer", "stream_reader"):
        from retracesoftware.install import session
        return getattr(session, name)
    raise AttributeError(name)
