"""retracesoftware.functional — see README.md in this folder."""
from retracesoftware.functional._backend import capabilities as _capabilities, choose as _choose

_impl, BACKEND, BACKEND_REASON = _choose("functional", "retracesoftware.functional._functional", "retracesoftware.functional._python")
#: What this backend can do. clean_tracebacks: an exception raised through
#: ``compose`` from native code keeps no frame of ours in its traceback.
CAPABILITIES = _capabilities("functional", BACKEND, BACKEND_REASON, cpp_only=("clean_tracebacks",))

#: The public contract: both backends export exactly these names.
__all__ = [
    "identity", "first_arg", "is_none",
    "compose", "sequence", "partial", "constantly", "repeatedly",
    "if_then_else", "dispatch", "memoize_one_arg", "nth_arg",
    "isinstance_of", "not_", "and_", "or_",
    "walker", "side_effect", "handle", "apply_with",
]

globals().update({_name: getattr(_impl, _name) for _name in __all__})
