"""retracesoftware.proxy — the record/replay engine (see README.md).

Pure logic, no I/O: it writes to and reads from the `Writer`/`Reader`
protocols (protocol.py) and never imports `retracesoftware.stream`.
"""
from retracesoftware.utils.errors import ReplayDivergence

from retracesoftware.proxy.memory import Handle, MemoryReader, MemoryWriter
from retracesoftware.proxy.stubs import ExternalObject, StubFactory
from retracesoftware.proxy.system import (RECORD, REPLAY, Callback, System,
                                          capture_stack, describe_call)
from retracesoftware.proxy.thread_order import ThreadIds, ThreadSequencer

__all__ = [
    "RECORD",
    "REPLAY",
    "Callback",
    "ExternalObject",
    "Handle",
    "MemoryReader",
    "MemoryWriter",
    "Reader",
    "ReplayDivergence",
    "StubFactory",
    "System",
    "ThreadIds",
    "ThreadSequencer",
    "Writer",
    "capture_stack",
    "describe_call",
]


def __getattr__(name: str):
    # The protocols are made on first use (protocol.py: typing is not
    # imported at start-up).
    if name in ("Reader", "Writer"):
        from retracesoftware.proxy import protocol
        return getattr(protocol, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
