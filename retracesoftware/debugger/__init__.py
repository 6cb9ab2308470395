"""The replay debugger (docs/DEBUGGING.md).

* `engine` — traces the replayed program (``sys.settrace`` on 3.11,
  ``sys.monitoring`` on 3.12+), counts line events per thread (a *position*
  is ``(thread, line events of that thread so far)``, reproducible on every
  replay) and goes back in time by deterministic re-execution: the replay
  process re-executes itself (same pid, terminal and pipes) and runs silently
  forward to the target position, from a forked checkpoint when one is there.
* `replay_pdb` — ``--pdb`` / ``breakpoint()``: pdb with ``goto N``,
  ``info events``, ``rstep``, ``rnext``, ``rcontinue``, ``rwatch EXPR``.
* `agent` / `dap` — the Debug Adapter Protocol: ``python -m retracesoftware
  dap`` (the adapter, on stdin/stdout) drives an agent inside the replay.

Everything the debugger does runs with the runtime DISABLED: it is never
read from nor written to the recording.
"""
from __future__ import annotations

import os

STATE_ENV = "RETRACE_DEBUG_STATE"
DAP_ENV = "RETRACE_DAP_FDS"


def requested(opts) -> bool:
    """Whether this replay runs under the debugger."""
    return bool(getattr(opts, "pdb", False) or os.environ.get(STATE_ENV) or os.environ.get(DAP_ENV))


def prepare():
    """Import the engine before the boundary is installed (its private
    references to ``_thread`` and ``os`` are the real ones)."""
    from retracesoftware.debugger import engine
    engine.capture_environment()


def start(session, opts):
    """Build the debugger for this replay: an object with ``run(code,
    globals)`` (given to ``runner.execute``), ``post_mortem(exc)`` and
    ``divergence(exc)``."""
    from retracesoftware.debugger.engine import Engine
    return Engine.create(session, opts)
