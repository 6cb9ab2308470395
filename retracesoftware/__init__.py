"""retracesoftware: deterministic record/replay for CPython.

PYTEST_DONT_REWRITE: pytest marks the packages of every distribution that
registers a pytest11 plugin (ours) for assertion rewriting, and warns for
each that is already imported. Under the CLI this package is imported before
pytest starts, so without this marker every recorded pytest session showed
"1 warning", and a suite with ``filterwarnings = error`` stopped at start-up.
"""
import os as _os
import sys as _sys


def _redirect_from_source_checkout():
    """Use the installed package when this file is the source checkout's.

    `python -m retracesoftware` run from the repository root puts the cwd first
    on sys.path, so this folder (which holds only the top layer; the others
    live in sibling folders and are joined only in the wheel) would shadow the
    installed package. Point ``__path__`` at the installed copy instead.
    """
    here = _os.path.dirname(_os.path.abspath(__file__))
    root = _os.path.dirname(here)
    if not _os.path.exists(_os.path.join(root, "CMakeLists.txt")):
        return None
    if _os.path.isdir(_os.path.join(here, "functional")):
        return None
    for entry in _sys.path:
        candidate = _os.path.join(_os.path.abspath(entry or _os.getcwd()), "retracesoftware")
        if candidate != here and _os.path.isdir(_os.path.join(candidate, "functional")):
            return candidate
    raise ImportError(
        "retracesoftware is imported from its source checkout and is not installed; "
        "run `pip install .` first"
    )


_installed = _redirect_from_source_checkout()
if _installed is not None:
    __path__ = [_installed]  # noqa: F811

__version__ = "0.1.0"

_LAZY = {"open_recording": "retracesoftware.recording", "Recording": "retracesoftware.recording",
         "Event": "retracesoftware.recording"}
# The error classes live in utils; loaded on first use, so that importing a
# lower layer (`import retracesoftware.functional`) does not load utils's backend.
for _name in ("ConfigError", "RecordingError", "RecordingFormatError", "ReplayDivergence",
              "RetraceError", "VersionMismatch"):
    _LAZY[_name] = "retracesoftware.utils.errors"
__all__ = [_name for _name, _module in _LAZY.items() if _module.endswith(".errors")]
del _name


def __getattr__(name):
    # Loaded on first use: `import retracesoftware` (every recorded start-up) stays cheap.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'retracesoftware' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)
