"""retracesoftware.stream — the recording format, writer and reader.

See README.md in this folder and docs/FORMAT.md.  ``BACKEND`` says which
implementation was chosen ("cpp" or "python"); both write the same bytes.
"""
from retracesoftware.functional._backend import capabilities as _capabilities, choose as _choose

_impl, BACKEND, BACKEND_REASON = _choose("stream", "retracesoftware.stream._stream", "retracesoftware.stream._python")
#: Both backends write the same bytes: no feature is C++-only.
CAPABILITIES = _capabilities("stream", BACKEND, BACKEND_REASON)

from retracesoftware.utils import thread_ids_changed as _utils_thread_ids_changed  # noqa: E402
from retracesoftware.utils.errors import RecordingError, RecordingFormatError  # noqa: E402
from retracesoftware.stream._common import (  # noqa: E402
    FORMAT_VERSION, MAGIC, StreamPosition, UnknownRecordedException, scan_frames, stdlib_module,
)

StreamWriter = _impl.StreamWriter
StreamReader = _impl.StreamReader


def thread_ids_changed() -> None:
    """A thread's logical id was given, changed or taken: every per-thread
    cache of ``thread_id()`` asks again -- the writer's (``cache_thread_id``)
    and the replay gateways' (``utils.thread_ids_changed``). Call with the
    GIL held, from whoever assigns ids (the install layer)."""
    _impl.thread_ids_changed()
    _utils_thread_ids_changed()


__all__ = [
    "BACKEND", "BACKEND_REASON", "CAPABILITIES", "StreamWriter", "StreamReader", "thread_ids_changed", "RecordingError",
    "RecordingFormatError", "StreamPosition", "UnknownRecordedException",
    "FORMAT_VERSION", "MAGIC", "scan_frames", "stdlib_module",
]
