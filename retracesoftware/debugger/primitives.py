"""The debugger's own primitives, shared by its modules (engine, agent,
frontend, replay_pdb): the real thread and select functions, and which
frames are never the program's.

The functions are taken at import, before the boundary is installed: the
program may patch or replace them, and the debugger's own calls are never
recorded.
"""
from __future__ import annotations

import _thread
import os

get_ident = _thread.get_ident
get_native_id = _thread.get_native_id
allocate_lock = _thread.allocate_lock
start_new_thread = _thread.start_new_thread
select = __import__("select").select

_OUR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_SKIP_PREFIXES = (_OUR_DIR, "<frozen importlib", "<frozen runpy", "<frozen zipimport")
_BDB_FILES = tuple(os.path.splitext(m.__file__)[0] for m in (__import__("bdb"), __import__("pdb"),
                                                              __import__("cmd")))


def skipped(filename: str) -> bool:
    """Whether a frame of *filename* is never the program's (our runtime,
    the import machinery, bdb/pdb/cmd): the debugger neither stops in it
    nor counts its lines."""
    return filename.startswith(_SKIP_PREFIXES) or os.path.splitext(filename)[0] in _BDB_FILES
