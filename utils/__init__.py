"""retracesoftware.utils — see README.md in this folder."""
from retracesoftware.functional._backend import capabilities as _capabilities, choose as _choose

_impl, BACKEND, BACKEND_REASON = _choose("utils", "retracesoftware.utils._utils", "retracesoftware.utils._python")
#: What this backend can do. identity_hashing: deterministic identity hashes
#: and ids (``set_identity_hashing``/``set_identity_ids`` work).
CAPABILITIES = _capabilities("utils", BACKEND, BACKEND_REASON, cpp_only=("identity_hashing",))

DISABLED = _impl.DISABLED
INTERNAL = _impl.INTERNAL
EXTERNAL = _impl.EXTERNAL
Gate = _impl.Gate
RecordGateway = _impl.RecordGateway
ReplayGateway = _impl.ReplayGateway
MethodGateway = _impl.MethodGateway
NewGateway = _impl.NewGateway
RecordCallGateway = _impl.RecordCallGateway
ReplayCallGateway = _impl.ReplayCallGateway
TurnState = _impl.TurnState
ReplaySyncGateway = _impl.ReplaySyncGateway
thread_ids_changed = _impl.thread_ids_changed
flush_pending_calls = _impl.flush_pending_calls
fingerprint = _impl.fingerprint
patch_type = _impl.patch_type
unpatch_type = _impl.unpatch_type
PatchToken = _impl.PatchToken
identity_hash = _impl.identity_hash
set_identity_hashing = _impl.set_identity_hashing
identity_hashing_enabled = _impl.identity_hashing_enabled
identity_id = _impl.identity_id
index_namespace = _impl.index_namespace
set_identity_ids = _impl.set_identity_ids
identity_ids_enabled = _impl.identity_ids_enabled
capture_stack = _impl.capture_stack
StackDelta = _impl.StackDelta
#: the C tracer of --schedule recordings (None with the Python backend;
#: install/schedule.py picks it or utils/_ticker.py)
NativeScheduleTracer = getattr(_impl, "ScheduleTracer", None)
# Imported now, before any patching: it keeps the real _thread.get_ident.
from retracesoftware.utils import _ticker as _ticker  # noqa: E402,F401
from retracesoftware.utils._intercept import MISSING, InterceptDict  # noqa: E402  (pure Python, both backends)

__all__ = [
    "BACKEND",
    "BACKEND_REASON",
    "CAPABILITIES",
    "DISABLED",
    "INTERNAL",
    "EXTERNAL",
    "Gate",
    "RecordGateway",
    "ReplayGateway",
    "MethodGateway",
    "NewGateway",
    "RecordCallGateway",
    "ReplayCallGateway",
    "TurnState",
    "ReplaySyncGateway",
    "thread_ids_changed",
    "flush_pending_calls",
    "fingerprint",
    "patch_type",
    "unpatch_type",
    "PatchToken",
    "identity_hash",
    "set_identity_hashing",
    "identity_hashing_enabled",
    "identity_id",
    "index_namespace",
    "set_identity_ids",
    "identity_ids_enabled",
    "capture_stack",
    "StackDelta",
    "InterceptDict",
    "MISSING",
]
