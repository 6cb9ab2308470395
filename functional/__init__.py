"""retracesoftware.functional — see README.md in this folder."""
from retracesoftware.functional._backend import choose as _choose

_impl, BACKEND, BACKEND_REASON = _choose("functional", "retracesoftware.functional._functional", "retracesoftware.functional._python")

#: The public contract: both backends export exactly these names.
__all__ = [
    "identity", "first_arg", "is_none",
    "compose", "sequence", "partial", "constantly", "repeatedly",
    "if_then_else", "dispatch", "memoize_one_arg", "nth_arg",
    "isinstance_of", "not_", "and_", "or_",
    "walker", "side_effect", "handle", "apply_with",
]

globals().update({_name: getattr(_impl, _name) for _name in __all__})
