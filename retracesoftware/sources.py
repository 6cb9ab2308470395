"""Every source file the program runs is the one it ran when recorded.

Code is live, data is recorded (DESIGN §1): a replay reads the program's
source from disk. So the recording says *which* source it ran, and a replay
refuses to run anything else (exit 4, unless ``--force``):

* the script: its digest is in the preamble (``preamble.check_program``);
* every module the program imports from a source file outside the standard
  library: when its code is loaded (``SourceLoader.get_code``, also what
  ``-m module`` runs), the boundary call ``retrace.source`` records what
  was loaded — ``("file", path, sha256)`` for the program's own files,
  ``("dist", name, version)`` once per distribution for site-packages (the
  installed version, from its ``.dist-info``). On replay the same import
  makes the same call; the recorded answer is compared with this machine's
  before the module's code runs.

Standard-library files, our own package and files without source
(``.pyc``-only, extension modules) are not checked.
"""
from __future__ import annotations

import os
import sys
from _thread import get_ident as _get_ident

from retracesoftware.preamble import file_digest
from retracesoftware.utils import DISABLED, INTERNAL
from retracesoftware.utils.errors import RecordingFormatError
from retracesoftware.install.isolation import posix_view as _os_view

_STDLIB = os.path.dirname(os.__file__) + os.sep
_OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + "retracesoftware" + os.sep
_SITE_DIRS = ("site-packages", "dist-packages")
_listdir = os.listdir
from retracesoftware.install.report import write as _write_stderr  # the user's stderr  # noqa: E402


def _site_split(path: str):
    """(site dir, top-level name) for a file under a site-packages folder."""
    parts = path.split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in _SITE_DIRS:
            top = parts[i + 1]
            for suffix in (".py",):
                if top.endswith(suffix):
                    top = top[: -len(suffix)]
            return os.sep.join(parts[: i + 1]), top
    return None


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


_dist_cache: dict = {}


def _dist_version(site: str, top: str):
    """(distribution name, version) installing top-level *top* in *site*."""
    table = _dist_cache.get(site)
    if table is None:
        table = _dist_cache[site] = {}
        try:
            names = _listdir(site)
        except OSError:
            names = []
        for entry in names:
            if not entry.endswith((".dist-info", ".egg-info")):
                continue
            stem = entry.rsplit(".", 1)[0]
            dist, _, version = stem.partition("-")
            tops = {_norm(dist)}
            try:
                with open(os.path.join(site, entry, "top_level.txt"), encoding="utf-8") as fh:
                    tops |= {_norm(line.strip()) for line in fh if line.strip()}
            except OSError:
                pass
            for t in tops:
                table.setdefault(t, (dist, version))
    return table.get(_norm(top))


#: a replay of another checkout: where a recorded path's file is on this
#: machine (retracesoftware/paths.py PathMap.map), else None
live_path = None


def _digest_here(path: str):
    return file_digest(live_path(path) if live_path is not None else path)


def describe(path: str):
    """What the recording says about a loaded source file, or None when it
    is not checked (standard library, retracesoftware itself)."""
    if path.startswith(_OURS):
        return None
    site = _site_split(path)
    if site is not None:
        found = _dist_version(*site)
        if found is not None:
            return ("dist", found[0], found[1])
        return ("file", path, _digest_here(path) or "")
    if path.startswith(_STDLIB):
        return None
    return ("file", path, _digest_here(path) or "")


class SourceCheck:
    """The ``retrace.source`` boundary call around source loading."""

    def __init__(self, session, *, force: bool = False):
        self.session = session
        self.system = session.system
        self.force = force
        self._pending: dict = {}
        self._seen_dists: set = set()
        self._warned: set = set()
        self._call = self.system.patch_function(self._loaded, "retrace.source")

    def _loaded(self):
        return self._pending.pop(_get_ident())

    def install(self, installer):
        import importlib._bootstrap_external as external
        cls = external.SourceLoader
        get_code = cls.__dict__["get_code"]
        gate = self.system.gate
        state = installer._import_state
        check = self._check

        def checked_get_code(loader, fullname):
            stack = getattr(state, "outer", None)
            if gate.phase == INTERNAL or (gate.phase == DISABLED and stack and stack[-1] == INTERNAL):
                try:
                    path = loader.get_filename(fullname)
                except Exception:
                    path = None
                if type(path) is str:
                    check(_os_view.path.abspath(path))   # never through the program's patches of os
            return get_code(loader, fullname)
        checked_get_code.__name__ = checked_get_code.__qualname__ = "get_code"
        checked_get_code.__wrapped__ = get_code
        installer._set(cls, "get_code", checked_get_code)

    def _check(self, path):
        gate = self.system.gate
        previous = gate.swap(DISABLED)
        try:
            here = describe(path)
        finally:
            gate.phase = previous
        if here is None:
            return
        if here[0] == "dist":
            if here[1] in self._seen_dists:
                return
            self._seen_dists.add(here[1])
        self._pending[_get_ident()] = here
        previous = gate.swap(INTERNAL)
        try:
            recorded = self._call()
        except BaseException as exc:
            from retracesoftware.utils.errors import ReplayDivergence
            if self.session.mode != "replay" or not isinstance(exc, ReplayDivergence):
                raise
            self._refuse(path, None, here)
            return
        finally:
            self._pending.pop(_get_ident(), None)
            gate.phase = previous
        if self.session.mode != "replay":
            return
        if not (isinstance(recorded, (tuple, list)) and len(recorded) == 3 and recorded[0] == here[0]
                and (recorded[2] == here[2] if here[0] == "file" else tuple(recorded[1:]) == here[1:])):
            self._refuse(path, recorded, here)

    def _refuse(self, path, recorded, here):
        from retracesoftware.install.masking import printable
        shown = printable(path)
        if recorded is None or not isinstance(recorded, (tuple, list)) or len(recorded) != 3:
            line = (f"the recording has no digest of source file {shown}, which this replay imports — "
                    f"it was not recorded from these sources; re-record")
            self.session.stop_early(line, RecordingFormatError(line))
            return
        kind, where, digest = recorded
        if kind == "dist" and here[0] == "dist":
            problem = (f"{shown} comes from {printable(here[1])} {printable(here[2])}, the recording used "
                       f"{printable(where)} {printable(digest)}")
        else:
            problem = f"source file {shown} differs from the recorded one (recorded path {printable(where)})"
        if self.force:
            if path not in self._warned:
                self._warned.add(path)
                previous = self.system.gate.swap(DISABLED)   # not the program's output
                try:
                    _write_stderr(f"retrace: warning: {problem} (replaying anyway: --force)\n")
                finally:
                    self.system.gate.phase = previous
            return
        line = f"{problem} — replay with the recorded sources, or pass --force to try anyway"
        self.session.stop_early(line, RecordingFormatError(line))


def install(session, *, force: bool = False) -> SourceCheck:
    check = SourceCheck(session, force=force)
    check.install(session.installer)
    session.sources = check
    return check
