"""Portable recordings: replay a recording made in another checkout.

The program always sees the recorded paths (its cwd, ``sys.path``, every
``stat`` and ``listdir`` come from the recording), so its output, its
tracebacks and pytest's report are the recorded ones byte for byte. What
the replay reads *live* — code: the import system finding and reading
modules, pytest's assertion rewriter, the debugger's source lines, the
preamble's source digests — is read from where that code is on this
machine. A ``PathMap`` maps a recorded prefix to a local one:

* the project root (the recorded cwd) maps to this replay's cwd by itself
  when the recorded one does not exist here and the sources the recording
  names have the same digests under the new root;
* ``--remap OLD=NEW`` maps anything else (the site-packages of another venv
  with the same versions, for example).

Only calls the replay makes for real go through the map: the gateways'
live targets (``System.live_call_filter``, used in the DISABLED phase: the
import system, the debugger) and ``importlib``'s own reads
(``_io.open_code``/``FileIO`` in ``importlib._bootstrap_external``).
"""
from __future__ import annotations

import os
import sys
from retracesoftware.utils.isolate import isolate_module

_exists = os.path.exists
# Private copies taken at import, before any patch (utils/isolate.py).
_real_os = isolate_module(os)
from retracesoftware.install.report import write as _write_stderr  # the user's stderr  # noqa: E402

#: boundary functions whose first argument (or ``path=``) is a path read live
PATH_CALLS = frozenset({
    "posix.stat", "posix.lstat", "posix.open", "posix.listdir", "posix.scandir", "posix.access",
    "posix.readlink", "posix.chdir", "os.stat", "os.lstat", "os.open", "os.listdir", "os.scandir",
    "os.access", "os.readlink",
})


class PathMap:
    """Recorded prefix -> local prefix, longest prefix first."""

    def __init__(self, pairs=()):
        self.pairs: list[tuple[str, str]] = []
        for old, new in pairs:
            self.add(old, new)

    def add(self, old: str, new: str) -> None:
        old = os.path.normpath(old)
        new = os.path.normpath(os.path.abspath(new))
        if old != new and (old, new) not in self.pairs:
            self.pairs.append((old, new))
            self.pairs.sort(key=lambda pair: -len(pair[0]))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def map(self, path):
        """*path* (str, bytes or path-like) as it is here; unchanged when no prefix applies."""
        if isinstance(path, int) or not self.pairs:
            return path
        try:
            raw = _real_os.fspath(path)
        except TypeError:
            return path
        as_bytes = isinstance(raw, bytes)
        text = os.fsdecode(raw) if as_bytes else raw
        for old, new in self.pairs:
            if text == old or text.startswith(old + os.sep):
                mapped = new + text[len(old):]
                return os.fsencode(mapped) if as_bytes else mapped
        return path

    # ---------------------------------------------------------------- live calls
    def live_call_filter(self, target, name):
        """``System.live_call_filter``: the target a replay gateway calls for real."""
        if name not in PATH_CALLS:
            return target
        mapper = self.map

        def mapped(*args, **kwargs):
            if args:
                args = (mapper(args[0]),) + args[1:]
            if "path" in kwargs:
                kwargs["path"] = mapper(kwargs["path"])
            return target(*args, **kwargs)
        mapped.__name__ = getattr(target, "__name__", "mapped")
        mapped.__wrapped__ = target
        return mapped

    def install_import_reads(self) -> None:
        """importlib reads source and bytecode with ``_io.open_code`` and
        ``_io.FileIO`` (C, below any gateway): map those too."""
        external = sys.modules["importlib._bootstrap_external"]
        real_io = external._io
        mapper = self.map

        class _MappedIO:
            def __getattr__(self, attr):
                return getattr(real_io, attr)

            @staticmethod
            def open_code(path):
                return real_io.open_code(mapper(path))

            @staticmethod
            def FileIO(path, *args, **kwargs):  # noqa: N802 - the name importlib uses
                return real_io.FileIO(mapper(path), *args, **kwargs)

        external._io = _MappedIO()

    def describe(self) -> str:
        return ", ".join(f"{old} -> {new}" for old, new in self.pairs)


def _digest(path):
    from retracesoftware.preamble import file_digest
    return file_digest(path)


def for_replay(preamble: dict, remaps=(), *, sources=None) -> PathMap:
    """The map for replaying *preamble*'s recording here: ``--remap`` pairs,
    then the project root (recorded cwd -> this cwd) when the recorded root
    does not exist here and the recorded sources under it (the preamble's
    and *sources*: relative path -> digest, from the tape) match here.
    *sources* may be a function giving that dict: it reads the whole tape, so
    it is called only when the recorded root is missing here."""
    pathmap = PathMap(remaps)
    root = preamble.get("project_root") or preamble.get("cwd")
    here = _real_os.getcwd()
    if not isinstance(root, str) or _exists(root) or os.path.normpath(root) == os.path.normpath(here):
        return pathmap
    if any(root == old or root.startswith(old + os.sep) for old, _ in pathmap.pairs):
        return pathmap   # --remap already covers it
    candidate = PathMap([(root, here)])
    checked = dict((p, d) for p, d in (preamble.get("sources") or {}).items()
                   if isinstance(p, str) and p.startswith(root + os.sep))
    if callable(sources):
        sources = sources()
    for rel, digest in (sources or {}).items():
        checked[os.path.join(root, rel)] = digest
    for path, digest in checked.items():
        if _digest(candidate.map(path)) != digest:
            _write_stderr(f"retrace: warning: not replaying the recorded project {root} from {here}: "
                          f"{candidate.map(path)} differs from the recorded source (run the replay from a "
                          f"checkout of the same commit, or pass --remap {root}=DIR)\n")
            return pathmap
    pathmap.add(root, here)
    return pathmap


def mapped_preamble(preamble: dict, pathmap: PathMap) -> dict:
    """*preamble* with its source paths as they are here (for the digest check)."""
    if not pathmap or not isinstance(preamble.get("sources"), dict):
        return preamble
    copy = dict(preamble)
    copy["sources"] = {pathmap.map(p): d for p, d in preamble["sources"].items()}
    return copy


def mapped_target(target, pathmap: PathMap):
    """*target* with its script's path as it is here (for the digest check)."""
    if not pathmap or getattr(target, "kind", None) != "script" or not target.path:
        return target
    from retracesoftware.utils.records import replace
    return replace(target, path=pathmap.map(target.path))


def check_interpreter(preamble: dict) -> None:
    """Same major.minor is required (preamble.check); a patch-level difference
    is only a warning: the boundary and the bytecode are the same."""
    recorded = preamble.get("python_version_info") or []
    if list(recorded[:2]) == list(sys.version_info[:2]) and list(recorded[:3]) != list(sys.version_info[:3]):
        _write_stderr(f"retrace: warning: recorded with Python {'.'.join(map(str, recorded[:3]))}, "
                      f"replaying with {'.'.join(map(str, sys.version_info[:3]))} (same major.minor: "
                      f"replaying)\n")
