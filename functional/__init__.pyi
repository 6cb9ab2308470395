from retracesoftware.functional._backend import Capabilities
from retracesoftware.functional._functional import (
    and_ as and_,
    apply_with as apply_with,
    compose as compose,
    constantly as constantly,
    dispatch as dispatch,
    first_arg as first_arg,
    handle as handle,
    identity as identity,
    if_then_else as if_then_else,
    is_none as is_none,
    isinstance_of as isinstance_of,
    memoize_one_arg as memoize_one_arg,
    not_ as not_,
    nth_arg as nth_arg,
    or_ as or_,
    partial as partial,
    repeatedly as repeatedly,
    sequence as sequence,
    side_effect as side_effect,
    walker as walker,
)

BACKEND: str
BACKEND_REASON: str
CAPABILITIES: Capabilities
__all__: list[str]
