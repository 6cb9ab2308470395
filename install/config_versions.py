"""Versions in boundary configs: PEP 440-style version keys for
``[requires]`` bounds, ``when.python`` specs, distribution names
(install/config.py uses these; split out of it)."""
from __future__ import annotations

import re
import sys
TYPE_CHECKING = False   # (typing is not imported at start-up)
if TYPE_CHECKING:
    from typing import Any  # noqa: F401

__all__ = ["COMPARE", "version_key", "parse_version", "parse_python_spec", "normalise_python_version",
           "normalise_distribution"]


#: compiled on first use (re keeps it): ~2.4 ms of compile at every start,
#: where only a [requires] or when.python config parse needs it
_VERSION_PATTERN = (
    r"""^\s*v?
    (?:(?P<epoch>\d+)!)?
    (?P<release>\d+(?:\.\d+)*)
    (?:[-_.]?(?P<pre>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>\d*))?
    (?:-(?P<post_implicit>\d+)|[-_.]?(?:post|rev|r)[-_.]?(?P<post_n>\d*))?
    (?P<dev>[-_.]?dev[-_.]?(?P<dev_n>\d*))?
    (?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}


def _has_post(m: re.Match) -> bool:
    return m.group("post_implicit") is not None or m.group("post_n") is not None


def version_key(text: str) -> tuple:
    """PEP 440 ordering without `packaging`: dev < pre < final < post.

    ``2.0.dev1 < 2.0a1 < 2.0rc1 < 2.0 == 2.0.0 < 2.0.post1 < 2.1.dev0``.
    Local labels (``+cpu``) are ignored.  Raises ValueError if unparsable.
    """
    m = re.compile(*_VERSION_PATTERN).match(text)
    if m is None:
        raise ValueError(text)
    release = [int(p) for p in m.group("release").split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre = m.group("pre")
    dev = m.group("dev") is not None
    if pre is not None:
        pre_key: tuple = (0, _PRE_RANK[pre.lower()], int(m.group("pre_n") or 0))
    elif dev and not _has_post(m):
        pre_key = (-1,)  # 1.0.dev1 sorts before 1.0a1
    else:
        pre_key = (1,)
    if _has_post(m):
        post_key = int(m.group("post_implicit") or m.group("post_n") or 0)
    else:
        post_key = -1
    dev_key = int(m.group("dev_n") or 0) if dev else float("inf")
    return (int(m.group("epoch") or 0), tuple(release), pre_key, post_key, dev_key)


def parse_version(text: str) -> tuple:
    """Public form of the comparison key (raises ValueError if unparsable)."""
    return version_key(text)


COMPARE = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_CLAUSE_PATTERN = r"^\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+){0,2})\s*$"


def parse_python_spec(spec: str) -> tuple[tuple[str, tuple[int, ...]], ...] | None:
    clauses = []
    for part in spec.split(","):
        m = re.match(_CLAUSE_PATTERN, part)
        if m is None:
            return None
        clauses.append((m.group(1), tuple(int(x) for x in m.group(2).split("."))))
    return tuple(clauses)


def normalise_python_version(value: Any) -> tuple[int, ...]:
    if value is None:
        return tuple(sys.version_info[:3])
    if isinstance(value, str):
        return tuple(int(x) for x in value.split("."))
    return tuple(int(x) for x in value)


def normalise_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
