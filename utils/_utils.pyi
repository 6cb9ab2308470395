"""Type stubs of retracesoftware.utils._utils (same API as _python)."""
from types import TracebackType
from typing import Any, Callable, Optional

DISABLED: int
INTERNAL: int
EXTERNAL: int

class _GateUsing:
    def __enter__(self) -> "_GateUsing": ...
    def __exit__(self, et: Optional[type], ev: Optional[BaseException], tb: Optional[TracebackType]) -> bool: ...

class Gate:
    phase: int
    def __init__(self) -> None: ...
    def swap(self, phase: int, /) -> int: ...
    def using(self, phase: int, /) -> _GateUsing: ...
    def call(self, phase: int, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...

class RecordGateway:
    gate: Gate
    target: Callable[..., Any]
    before: Optional[Callable[..., Any]]
    after: Optional[Callable[[Any], Any]]
    error: Optional[Callable[[BaseException], Any]]
    __wrapped__: Callable[..., Any]
    __name__: str
    def __init__(
        self,
        gate: Gate,
        target: Callable[..., Any],
        before: Optional[Callable[..., Any]] = None,
        after: Optional[Callable[[Any], Any]] = None,
        error: Optional[Callable[[BaseException], Any]] = None,
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, objtype: Optional[type] = None) -> Any: ...

class ReplayGateway:
    gate: Gate
    target: Callable[..., Any]
    replay: Callable[..., Any]
    __wrapped__: Callable[..., Any]
    __name__: str
    def __init__(self, gate: Gate, target: Callable[..., Any], replay: Callable[..., Any]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, objtype: Optional[type] = None) -> Any: ...

class MethodGateway:
    bound: Any
    gateway: Callable[..., Any]
    real: Callable[..., Any]
    __wrapped__: Callable[..., Any]
    __name__: str
    def __init__(self, bound: Any, gateway: Callable[..., Any], real: Callable[..., Any]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, objtype: Optional[type] = None) -> Any: ...

class NewGateway:
    cls: type
    gate: Gate
    on_new: Optional[Callable[[Any], Any]]
    __wrapped__: Any
    __name__: str
    def __init__(self, cls: type, gate: Gate, on_new: Optional[Callable[[Any], Any]] = None) -> None: ...
    def __call__(self, subtype: type, /, *args: Any, **kwargs: Any) -> Any: ...

class RecordCallGateway:
    gate: Gate
    target: Callable[..., Any]
    write: Callable[..., Any]
    call_tag: Any
    name: Any
    result_tag: Any
    error_tag: Any
    slow: Optional[Callable[[Any], Any]]
    __wrapped__: Callable[..., Any]
    __name__: str
    def __init__(
        self,
        gate: Gate,
        target: Callable[..., Any],
        write: Callable[..., Any],
        call_tag: Any,
        name: Any,
        result_tag: Any,
        error_tag: Any,
        slow: Optional[Callable[[Any], Any]] = None,
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, objtype: Optional[type] = None) -> Any: ...

def flush_pending_calls() -> int: ...

def thread_ids_changed() -> None:
    """A thread's logical id was given, changed or taken: the replay gateways ask thread_id() again."""

def fingerprint(*args: Any, **kwargs: Any) -> int: ...

class PatchToken:
    @property
    def cls(self) -> type: ...
    @property
    def names(self) -> tuple[str, ...]: ...
    @property
    def active(self) -> bool: ...

def patch_type(cls: type, attrs: dict[str, Any]) -> PatchToken: ...
def unpatch_type(token: PatchToken) -> None: ...

def identity_hash(obj: object, /) -> int: ...
def set_identity_hashing(enabled: bool, /, *, gate: Gate | None = None, thread_id: Callable[[], object] | None = None) -> None: ...
def identity_hashing_enabled() -> bool: ...
def identity_id(obj: object, /) -> int: ...
def set_identity_ids(enabled: bool, /, *, keep_live: bool = False) -> None: ...
def identity_ids_enabled() -> bool: ...

Frame = tuple[str, int, str]

def capture_stack(skip: int = 0) -> tuple[Frame, ...]: ...

class StackDelta:
    def __init__(self) -> None: ...
    @property
    def previous(self) -> tuple[Frame, ...]: ...
    def capture(self, skip: int = 0) -> tuple[int, tuple[Frame, ...]]: ...
    def reset(self) -> None: ...

class TurnState:
    """The replay sequencer's flag: ``closed`` non-zero sends every replayed
    call down ReplayCallGateway's slow path."""
    closed: int
    def __init__(self) -> None: ...

class ReplayCallGateway:
    """See utils/README.md (the same contract as the Python backend)."""
    gate: Gate
    target: Callable[..., Any]
    __wrapped__: Callable[..., Any]
    __name__: str
    def __init__(
        self,
        gate: Gate,
        target: Callable[..., Any],
        take: Callable[..., Any],
        thread_id: Callable[[], Any],
        turn: TurnState,
        call_tag: str,
        name: str,
        result_tag: str,
        error_tag: str,
        slow: Callable[..., Any],
        handover: Optional[Callable[[], Any]] = None,
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, objtype: Optional[type] = None) -> Any: ...
