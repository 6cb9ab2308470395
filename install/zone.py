"""The time zone replays as recorded.

The C library's zone (what ``datetime.fromtimestamp``, ``datetime.astimezone``
and the ``time`` module's ``tzname``/``timezone``/``altzone``/``daylight``
use) comes from ``$TZ`` and the zone files of the machine. ``time.localtime``,
``mktime`` and ``strftime`` are recorded calls, but C code reading the zone
directly is not, so a replay on a machine in another zone, or of a program
that changes ``TZ`` and calls ``time.tzset()``, printed other times.

* At record start the zone is captured — the value of ``TZ`` and the bytes of
  the zone file it names (``/etc/localtime`` when unset) — into the
  preamble (``options.zone``); the replay installs the same zone in its own
  process (the file in a private temporary directory, ``TZ`` pointing at it,
  the real ``tzset()``) before the program runs.
* ``time.tzset()`` is a boundary call whose recorded result is the zone it
  set up; the replay installs that zone.
"""
from __future__ import annotations

import os
import posix
import stat as _stat
import time
from retracesoftware.utils.isolate import isolate_module

_real_tzset = getattr(time, "tzset", None)
_putenv = getattr(posix, "putenv", None)
_unsetenv = getattr(posix, "unsetenv", None)
# Private copies taken at import, before any patch (utils/isolate.py).
_real_posix = isolate_module(posix)
_ZONEINFO_DIRS = ("/usr/share/zoneinfo", "/usr/lib/zoneinfo", "/usr/share/lib/zoneinfo", "/etc/zoneinfo")
_MAX_ZONE_FILE = 1 << 20


def _zone_file(tz):
    """The zone file the C library reads for *tz* (None: unset), or None."""
    if tz is None:
        return "/etc/localtime"
    name = tz[1:] if tz.startswith(":") else tz
    if not name:
        return None
    if os.path.isabs(name):
        return name
    tzdir = _real_posix.environ.get(b"TZDIR")
    dirs = ((tzdir.decode("utf-8", "surrogateescape"),) if tzdir else ()) + _ZONEINFO_DIRS
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    return None


def capture():
    """The zone of this process now: ``[TZ or None, zone file bytes or None]``."""
    raw = _real_posix.environ.get(b"TZ")
    tz = raw.decode("utf-8", "surrogateescape") if raw is not None else None
    return [tz, _zone_bytes(tz)]


def _zone_bytes(tz):
    """The bytes of the zone file *tz* names here (a TZif file), or None.
    Only a regular file is read (on replay *tz* is data from the recording:
    a FIFO or a device it names must not block or feed the replay)."""
    data = None
    path = _zone_file(tz)
    if path is not None:
        try:
            fd = posix.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                if not _stat.S_ISREG(posix.fstat(fd).st_mode):
                    return None
                chunks = []
                size = 0
                while size <= _MAX_ZONE_FILE:
                    chunk = posix.read(fd, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                data = b"".join(chunks) if size <= _MAX_ZONE_FILE else None
            finally:
                posix.close(fd)
        except OSError:
            data = None
        if data is not None and not data.startswith(b"TZif"):
            data = None
    return data


class ZoneReplay:
    """Installs recorded zones in the replaying process."""

    def __init__(self, gate):
        self._gate = gate
        self._live = None           # (file, directory) of the zone in use

    def _remove(self, live):
        if live is not None:
            try:
                posix.unlink(live[0])
                posix.rmdir(live[1])
            except OSError:
                pass

    def _at_exit(self):
        from retracesoftware.utils import DISABLED
        previous = self._gate.swap(DISABLED)
        try:
            self._remove(self._live)
            self._live = None
        finally:
            self._gate.phase = previous

    def apply(self, zone):
        if not isinstance(zone, (list, tuple)) or len(zone) != 2 or _real_tzset is None:
            return
        from retracesoftware.utils import DISABLED
        previous = self._gate.swap(DISABLED)
        try:
            self._apply(*zone)
        finally:
            self._gate.phase = previous

    def _apply(self, tz, data):
        directory = path = None
        if isinstance(data, bytes) and (tz is None or isinstance(tz, str)) and _zone_bytes(tz) == data:
            # The zone TZ names here is the recorded one, byte for byte
            # (a replay on the recording machine): TZ as recorded, no file.
            data = None
        if data is not None and isinstance(data, bytes):
            # The file stays while it is the zone in use: glibc skips
            # re-reading a zone file with the same inode and times as the
            # last one, which a file removed at once could hand on.
            if self._live is None:
                import atexit
                atexit.register(self._at_exit)
            # (not tempfile: its first use reads the environment, which is
            # the program's to read, on the tape)
            base = (_real_posix.environ.get(b"TMPDIR") or b"/tmp").decode("utf-8", "surrogateescape")
            directory = os.path.join(base, f"retrace-zone-{posix.getpid()}-{_real_posix.urandom(6).hex()}")
            posix.mkdir(directory, 0o700)
            path = os.path.join(directory, "zone")
            fd = posix.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                posix.write(fd, data)
            finally:
                posix.close(fd)
            value = ":" + path
        elif isinstance(tz, str):
            value = tz
        else:
            value = None
        try:
            if value is None:
                if _unsetenv is not None:
                    _unsetenv("TZ")
            elif _putenv is not None:
                _putenv("TZ", value)
            _real_tzset()
        except (OSError, ValueError):
            pass
        finally:
            previous, self._live = self._live, ((path, directory) if path is not None else None)
            self._remove(previous)


def install(session, installer):
    """Replay: the recorded start zone now; both: ``time.tzset`` recorded."""
    system = session.system
    gate = system.gate
    if _real_tzset is None:
        return
    options = (session.preamble.get("options") or {}) if isinstance(session.preamble, dict) else {}
    replaying = system.mode == "replay"
    zones = ZoneReplay(gate) if replaying else None
    if replaying and "zone" in options:
        zones.apply(options["zone"])

    def set_zone():
        _real_tzset()
        return capture()
    set_zone.__name__ = "tzset"
    tape = system.patch_function(set_zone, "time.tzset")

    def tzset():
        zone = tape()
        if replaying:
            zones.apply(zone)
    tzset.__name__ = tzset.__qualname__ = "tzset"
    tzset.__module__ = "time"
    tzset.__doc__ = _real_tzset.__doc__
    current = time.__dict__.get("tzset")
    installer.patch(time, "tzset", tzset)
    if current is not None:
        installer.replace_everywhere({id(current): (current, tzset)})
