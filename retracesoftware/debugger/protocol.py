"""Shared by the DAP adapter and the agent in the replay: thread ids and
the line-framed JSON channel between them."""
from __future__ import annotations

import json
import os
import zlib

CAPABILITIES = {
    "supportsConfigurationDoneRequest": True,
    "supportsStepBack": True,
    "supportsRestartRequest": True,
    "supportsEvaluateForHovers": True,
    "supportsConditionalBreakpoints": True,
    "supportsTerminateRequest": True,
}


def dap_thread_id(tid) -> int:
    """A DAP thread id (a positive int) for a logical thread id (0, 1, 2…
    for the main thread's children, "1.2" for a grandchild)."""
    if isinstance(tid, int):
        return tid + 1
    return 100000 + zlib.crc32(str(tid).encode()) % 1000000


def thread_name(tid) -> str:
    return "main thread (0)" if tid == 0 else f"thread {tid}"


class Channel:
    """Newline-delimited JSON over a pair of file descriptors."""

    def __init__(self, rfd, wfd, write_lock=None):
        self.rfd = rfd
        self.wfd = wfd
        self._buffer = b""
        self._lock = write_lock

    def send(self, message: dict) -> None:
        data = json.dumps(message, default=repr).encode() + b"\n"
        if self._lock is not None:
            self._lock.acquire()
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.wfd, view)
                view = view[n:]
        finally:
            if self._lock is not None:
                self._lock.release()

    def feed(self, data: bytes) -> list:
        self._buffer += data
        out = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip():
                out.append(json.loads(line))
        return out

    def receive(self):
        """Blocking: the next message, or None at end of input."""
        while b"\n" not in self._buffer:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line) if line.strip() else self.receive()
