"""Stubs for retracesoftware.utils: the chosen backend's names (both
backends expose them; see _utils.pyi) and the pure-Python helpers."""
from retracesoftware.functional._backend import Capabilities
from retracesoftware.utils._intercept import MISSING as MISSING, InterceptDict as InterceptDict
from retracesoftware.utils._utils import (
    DISABLED as DISABLED,
    EXTERNAL as EXTERNAL,
    Gate as Gate,
    INTERNAL as INTERNAL,
    MethodGateway as MethodGateway,
    NewGateway as NewGateway,
    PatchToken as PatchToken,
    RecordCallGateway as RecordCallGateway,
    RecordGateway as RecordGateway,
    ReplayCallGateway as ReplayCallGateway,
    ReplayGateway as ReplayGateway,
    StackDelta as StackDelta,
    TurnState as TurnState,
    capture_stack as capture_stack,
    fingerprint as fingerprint,
    flush_pending_calls as flush_pending_calls,
    identity_hash as identity_hash,
    identity_hashing_enabled as identity_hashing_enabled,
    identity_id as identity_id,
    identity_ids_enabled as identity_ids_enabled,
    patch_type as patch_type,
    set_identity_hashing as set_identity_hashing,
    set_identity_ids as set_identity_ids,
    thread_ids_changed as thread_ids_changed,
    unpatch_type as unpatch_type,
)

BACKEND: str
BACKEND_REASON: str
CAPABILITIES: Capabilities
