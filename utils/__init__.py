"""retracesoftware.utils — see README.md in this folder."""
from retracesoftware.functional._backend import choose as _choose

_impl, BACKEND, BACKEND_REASON = _choose("utils", "retracesoftware.utils._utils", "retracesoftware.utils._python")
