"""retracesoftware.install — configs → patches, import hooks, threads, pytest.

See README.md in this folder. Public entry points::

    install_for_pytest()        # in a conftest.py: record+replay each test below it
    TestRunner                  # the same, for one callable
    Installer, load_config      # the machinery the CLI uses
    stream_writer, stream_reader  # the stream <-> proxy adapters

Imports are lazy: the ``.pth`` hook and the CLI pay only for what they use.
"""

_LAZY = {
    "TestRunner": "retracesoftware.install.testing",
    "install_for_pytest": "retracesoftware.install.testing",
    "Installer": "retracesoftware.install.installer",
    "load_config": "retracesoftware.install.config",
    "stream_writer": "retracesoftware.install.recording_streams",
    "stream_reader": "retracesoftware.install.recording_streams",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'retracesoftware.install' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)
