"""retracesoftware.functional — see README.md in this folder."""
from retracesoftware.functional._backend import choose as _choose

_impl, BACKEND, BACKEND_REASON = _choose("functional", "retracesoftware.functional._functional", "retracesoftware.functional._python")
