"""Stubs for retracesoftware.stream: the chosen backend's writer and reader
(both backends expose the same API; see _stream.pyi) and the format's names."""
from typing import Iterator, Optional

from retracesoftware.functional._backend import Capabilities
from retracesoftware.stream._stream import (
    StreamPosition as StreamPosition,
    StreamReader as StreamReader,
    StreamWriter as StreamWriter,
    UnknownRecordedException as UnknownRecordedException,
)
from retracesoftware.utils.errors import RecordingError as RecordingError
from retracesoftware.utils.errors import RecordingFormatError as RecordingFormatError

BACKEND: str
BACKEND_REASON: str
CAPABILITIES: Capabilities
FORMAT_VERSION: int
MAGIC: bytes

def scan_frames(path: str) -> Iterator[tuple[int, int, int, Optional[bool]]]: ...
def stdlib_module(name: str) -> object: ...
