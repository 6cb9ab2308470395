"""The garbage collector paused while our runtime starts.

Importing and installing our runtime allocates tens of thousands of
objects; with the collector on, the interpreter runs some forty automatic
collections meanwhile (gen 1 ones among them, each walking most of what
was imported): about 5 ms of a 50 ms start. The CLI pauses the collector
when it starts a record or a replay (retracesoftware/__main__.py); the
session resumes it as it installs (install/session_base.py), before the
program's collector state is read and before the full collection that
starts both runs with no garbage of ours.
"""
import gc

__all__ = ["pause_collector", "resume_collector", "collector_enabled"]

#: whether the collector was on when paused; None: not paused
_was_enabled = None


def pause_collector() -> None:
    """Turn automatic collection off until `resume_collector` (idempotent)."""
    global _was_enabled
    if _was_enabled is None:
        _was_enabled = gc.isenabled()
        gc.disable()


def resume_collector() -> None:
    """Turn automatic collection back on if `pause_collector` turned it off;
    nothing when not paused."""
    global _was_enabled
    was, _was_enabled = _was_enabled, None
    if was:
        gc.enable()


def collector_enabled() -> bool:
    """Whether automatic collection is on as the program will find it: the
    state before `pause_collector` while paused."""
    return gc.isenabled() if _was_enabled is None else _was_enabled
