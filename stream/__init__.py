"""retracesoftware.stream — see README.md in this folder."""
from retracesoftware.functional._backend import choose as _choose

_impl, BACKEND, BACKEND_REASON = _choose("stream", "retracesoftware.stream._stream", "retracesoftware.stream._python")
