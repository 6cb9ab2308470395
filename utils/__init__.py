"""retracesoftware.utils — see README.md in this folder."""
from retracesoftware.functional._backend import choose as _choose

_impl, BACKEND, BACKEND_REASON = _choose("utils", "retracesoftware.utils._utils", "retracesoftware.utils._python")

DISABLED = _impl.DISABLED
INTERNAL = _impl.INTERNAL
EXTERNAL = _impl.EXTERNAL
Gate = _impl.Gate
RecordGateway = _impl.RecordGateway
ReplayGateway = _impl.ReplayGateway
fingerprint = _impl.fingerprint

__all__ = [
    "BACKEND",
    "BACKEND_REASON",
    "DISABLED",
    "INTERNAL",
    "EXTERNAL",
    "Gate",
    "RecordGateway",
    "ReplayGateway",
    "fingerprint",
]
