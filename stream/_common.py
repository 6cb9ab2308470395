"""Format constants and helpers shared by both backends of retracesoftware.stream.

Both the C++ ``_stream`` extension and the pure-Python ``_python`` backend use
this module for everything that is rare (so speed does not matter) but must be
*identical* between them: the reduction of library-known types (exceptions,
structseqs, datetimes, enums, ...) into plain state and back, the wording of
errors, the fork/atexit registry of live writers.  See docs/FORMAT.md.

Private references to the stdlib are taken at import, before the installer
patches anything (DESIGN §3: our runtime never calls through a patched
attribute).
"""
from __future__ import annotations

import os as _os
import struct as _struct
import sys as _sys
import weakref as _weakref
import zlib as _zlib
import atexit as _atexit
try:
    import _datetime             # the C classes datetime.py re-exports: 2 ms less of every start-up
except ImportError:              # pragma: no cover  (a build without the accelerator)
    import datetime as _datetime
from collections import namedtuple as _namedtuple
from enum import Enum as _Enum

from retracesoftware.utils.errors import RecordingError, RecordingFormatError, RetraceError
from retracesoftware.utils.isolate import isolate_module

# Private copies taken at import, before any patch (utils/isolate.py).
_real_os = isolate_module(_os)
# The real datetime classes, taken at import: a program may replace the
# module's attributes (freezegun sets datetime.datetime = FakeDatetime), and
# a real datetime on the tape must still be recognised and rebuilt as one.
_dt = type("_dt", (), {name: getattr(_datetime, name)
                       for name in ("datetime", "date", "time", "timedelta", "timezone", "tzinfo")})
_crc32 = _zlib.crc32
_modules = _sys.modules

#: 8 bytes: a high byte (catches 7-bit transports), the name, CR LF (catches
#: newline translation), ^Z and LF (PNG's trick).
MAGIC = b"\x89RTRC\r\n\x1a"
#: Format version, u32 little-endian right after MAGIC.
FORMAT_VERSION = 2
#: Version 1 is version 2 without compressed frames: still readable.
OLDEST_READABLE_VERSION = 1
HEADER = MAGIC + _struct.pack("<I", FORMAT_VERSION)
#: Set in a frame's length word: the payload is one zstd frame of the events.
FRAME_COMPRESSED = 0x80000000
HEADER_SIZE = len(HEADER)  # 12
FRAME_HEADER = _struct.Struct("<II")  # payload length, crc32(payload)
FRAME_HEADER_SIZE = 8
#: A frame longer than this is taken as damage, not as a reason to allocate.
MAX_FRAME = 0xFFFFFFFF

# msgpack extension type codes (docs/FORMAT.md §Values).
EXT_TUPLE = 1
EXT_BIGINT = 2
EXT_SET = 3
EXT_FROZENSET = 4
EXT_STR_DEF = 5
EXT_STR_REF = 6
EXT_NEW_BINDING = 7
EXT_HANDLE = 8
EXT_BINDING_DELETE = 9
EXT_THREAD_SWITCH = 10
EXT_OBJECT = 11
EXT_HOOK = 12

#: Strings of this many code points (inclusive) are interned.
INTERN_MIN = 4
INTERN_MAX = 64
#: At most this many strings are interned per recording.
INTERN_LIMIT = 1 << 16

#: int range msgpack stores natively; outside it, EXT_BIGINT.
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1

StreamPosition = _namedtuple("StreamPosition", "frame offset event")
StreamPosition.__doc__ = (
    "Where a StreamReader is: frame index (0 = preamble), byte offset in the "
    "file of the next event, index of the next event (0 = first after the preamble)."
)


def index_bytes(index: int) -> bytes:
    """An index (string ref, handle) as 1, 2, 4 or 8 big-endian bytes."""
    if index < 0x100:
        return bytes((index,))
    if index < 0x10000:
        return index.to_bytes(2, "big")
    if index < 0x100000000:
        return index.to_bytes(4, "big")
    return index.to_bytes(8, "big")


def bigint_bytes(value: int) -> bytes:
    return value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)


# ---------------------------------------------------------------- errors


def type_name(tp: type) -> str:
    module = getattr(tp, "__module__", None)
    qualname = getattr(tp, "__qualname__", tp.__name__)
    if module in (None, "builtins"):
        return qualname
    return f"{module}.{qualname}"


def unrecordable(value, path) -> TypeError:
    """The TypeError for a value neither backend can record.

    *path* is the list of path components from the innermost container out
    (the order an unwinding encoder collects them).
    """
    where = "".join(reversed(path))
    msg = f"cannot record value of type {type_name(type(value))}"
    if where:
        msg += f" at {where}"
    msg += (" (record it by value with a registered hook: "
            "StreamWriter.register(type, name, to_state), or bind it)")
    return TypeError(msg)


def format_error(what: str, offset: int, frame: int, event: int, todo: str | None = None):
    """A RecordingFormatError carrying where the damage is."""
    if todo is None:
        todo = (f"the {event} events before it are readable; replay stops there "
                f"(re-record to get the rest)")
    exc = RecordingFormatError(
        f"recording damaged at byte {offset} (frame {frame}, event {event}): {what} — {todo}")
    exc.offset = offset
    exc.frame = frame
    exc.event = event
    exc.reason = what
    return exc


# ------------------------------------------------- library-known values


def _lookup(module: str, qualname: str):
    """Find a class by module + qualname among *already imported* modules.

    Reading a recording never imports anything: a damaged or hostile file
    must not be able to run import-time code.
    """
    mod = _modules.get(module)
    if mod is None:
        return None
    obj = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class UnknownRecordedException(RetraceError):
    """Stand-in for a recorded exception whose class cannot be found at read time.

    ``recorded_type`` is "module.qualname" of the original; ``args`` are its args.
    """

    recorded_type = "?"

    def __str__(self):
        return f"{self.recorded_type}{self.args!r}"


_standins: dict = {}


def _standin(module: str, qualname: str):
    key = (module, qualname)
    cls = _standins.get(key)
    if cls is None:
        name = qualname.rsplit(".", 1)[-1]
        cls = type(name, (UnknownRecordedException,), {
            "__module__": module, "__qualname__": qualname,
            "recorded_type": f"{module}.{qualname}",
        })
        _standins[key] = cls
    return cls


_OSERROR_ATTRS = ("errno", "strerror", "filename", "filename2")
_dt_types = (_dt.datetime, _dt.date, _dt.time, _dt.timedelta, _dt.timezone)


def reduce_value(value):
    """Reduce a value the fast paths do not know.

    Returns ``(EXT_OBJECT, [kind, *state])`` for library-known types,
    ``(0, base_value)`` for subclasses of plain types (recorded as the base
    type), or ``None`` when the value cannot be recorded.
    """
    tp = type(value)
    if isinstance(value, BaseException):
        attrs = {}
        if isinstance(value, OSError):
            for name in _OSERROR_ATTRS:
                v = getattr(value, name, None)
                if v is not None:
                    attrs[name] = v
        # Attributes the raiser set beyond args (ssl's verify_code/reason/
        # library, set from C; json's msg/pos; a library's own codes): the
        # plain values among them. Our own bookkeeping (_retrace*) and
        # traceback machinery are not the exception's data.
        extra = getattr(value, "__dict__", None)
        if extra:
            for name, v in extra.items():
                if (type(name) is str and not name.startswith(("_retrace", "__"))
                        and name not in attrs and _plain(v)):
                    attrs[name] = v
        return EXT_OBJECT, ["exc", tp.__module__, tp.__qualname__, tuple(value.args), attrs]
    if isinstance(value, _Enum):
        return EXT_OBJECT, ["enum", tp.__module__, tp.__qualname__, value._value_]
    if isinstance(value, tuple):
        if hasattr(tp, "n_sequence_fields"):
            cls_, (visible, extra) = value.__reduce__()[:2]
            return EXT_OBJECT, ["structseq", tp.__module__, tp.__qualname__, tuple(visible), dict(extra)]
        if hasattr(tp, "_fields") and hasattr(tp, "_make"):
            return EXT_OBJECT, ["namedtuple", tp.__module__, tp.__qualname__, tuple(value)]
        return 0, tuple(value)
    if isinstance(value, _dt_types):
        if tp is _dt.datetime:
            return EXT_OBJECT, ["datetime", value.year, value.month, value.day, value.hour,
                                value.minute, value.second, value.microsecond, value.tzinfo, value.fold]
        if tp is _dt.date:
            return EXT_OBJECT, ["date", value.year, value.month, value.day]
        if tp is _dt.time:
            return EXT_OBJECT, ["time", value.hour, value.minute, value.second,
                                value.microsecond, value.tzinfo, value.fold]
        if tp is _dt.timedelta:
            return EXT_OBJECT, ["timedelta", value.days, value.seconds, value.microseconds]
        if tp is _dt.timezone:
            return EXT_OBJECT, ["timezone", *value.__getinitargs__()]
    if tp.__module__ == "zoneinfo" and tp.__name__ == "ZoneInfo" and value.key is not None:
        return EXT_OBJECT, ["zoneinfo", value.key]
    if tp.__module__ == "sqlite3" and tp.__name__ == "Row":
        return EXT_OBJECT, ["sqlite3.Row", list(value.keys()), tuple(value)]
    if tp.__module__ == "decimal" and tp.__name__ == "Decimal":
        return EXT_OBJECT, ["decimal", str(value)]
    if tp is complex:
        return EXT_OBJECT, ["complex", value.real, value.imag]
    if tp is bytearray:
        return EXT_OBJECT, ["bytearray", bytes(value)]
    if isinstance(value, bool):
        return None
    for base in (int, float, str, bytes, list, dict, frozenset, set):
        if isinstance(value, base):
            return 0, base(value)
    return None


class NotRebuilt:
    """A recorded value that reading does not rebuild, because rebuilding it
    could import or run code, or read files a recording names (DESIGN §10):
    says what it was. ``kind`` and ``fields`` are the recorded state."""

    __slots__ = ("kind", "fields", "why")

    def __init__(self, kind, fields, why):
        self.kind, self.fields, self.why = kind, tuple(fields), why

    def __repr__(self):
        shown = ", ".join(repr(f) for f in self.fields)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return f"<recorded {self.kind}({shown}), not rebuilt: {self.why}>"

    __str__ = __repr__

    def __eq__(self, other):
        return type(other) is NotRebuilt and (self.kind, self.fields) == (other.kind, other.fields)

    def __hash__(self):
        return hash((self.kind, len(self.fields)))


_STDLIB_DIRS = [_os.path.dirname(_os.__file__)]
_STDLIB_DIRS.append(_os.path.join(_STDLIB_DIRS[0], "lib-dynload"))


def stdlib_module(name: str):
    """A standard-library module: already imported, or loaded from the
    standard library's own folders only (never from sys.path: the cwd or a
    recording's sys_path may hold a file with its name)."""
    mod = _modules.get(name)
    if mod is not None:
        return mod
    import importlib.machinery as machinery
    import importlib.util as util
    spec = machinery.PathFinder.find_spec(name, _STDLIB_DIRS)
    if spec is None:
        raise ImportError(name)
    mod = util.module_from_spec(spec)
    _modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        _modules.pop(name, None)
        raise
    return _modules.get(name, mod)


_stdlib_module = stdlib_module


_TZ_KEY = __import__("re").compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")


def _zoneinfo(key):
    """``ZoneInfo(key)`` when it reads only the system's time-zone files:
    an unknown key would make zoneinfo import the ``tzdata`` package from
    sys.path (the cwd, the recording's folder)."""
    if type(key) is not str or len(key) > 255 or not _TZ_KEY.match(key):
        return NotRebuilt("zoneinfo", [key], "not a time-zone name")
    zoneinfo = _stdlib_module("zoneinfo")
    if _modules.get("tzdata") is None:
        for base in zoneinfo.TZPATH:
            if _os.path.isfile(_os.path.join(base, key)):
                break
        else:
            return NotRebuilt("zoneinfo", [key], "no such time zone in this system's TZPATH")
    return zoneinfo.ZoneInfo(key)


def _sqlite_row(keys, values):
    """A real ``sqlite3.Row`` with these column names and values, made from
    a private in-memory cursor whose description has the recorded names
    (a Row takes its keys from its cursor's description)."""
    if not all(type(k) is str for k in keys) or len(keys) != len(values):
        raise ValueError("sqlite3.Row state is not [names, values]")
    sqlite3 = _stdlib_module("sqlite3")
    con = sqlite3.connect(":memory:")
    try:
        quoted = ", ".join('NULL AS "' + k.replace('"', '""') + '"' for k in keys) or "NULL"
        cur = con.execute("SELECT " + quoted)
        return sqlite3.Row(cur, values)
    finally:
        con.close()


_PLAIN = (type(None), bool, int, float, str, bytes)


def _plain(v, depth=0):
    """A value any backend records as is (for exception attributes)."""
    if type(v) in _PLAIN:
        return True
    if type(v) in (tuple, list) and depth < 3 and len(v) <= 64:
        return all(_plain(x, depth + 1) for x in v)
    return False


def rebuild_value(state):
    """Inverse of reduce_value for EXT_OBJECT: *state* is ``[kind, *fields]``.

    Every field is type-checked first (a hostile file must not make us
    allocate gigabytes or run code); a damaged state is a ValueError."""
    try:
        return _rebuild(state)
    except (TypeError, ValueError, OverflowError, ArithmeticError, KeyError, AttributeError) as exc:
        raise ValueError(f"bad EXT_OBJECT {type(state[0]).__name__ if state else ''} state: "
                         f"{type(exc).__name__}") from None


def _ints(f, n):
    if len(f) != n or not all(type(x) is int for x in f):
        raise ValueError("fields")
    return f


def _rebuild(state):
    if type(state) is not list or not state or type(state[0]) is not str:
        raise ValueError("EXT_OBJECT payload is not [kind, ...]")
    kind = state[0]
    f = state[1:]
    if kind == "exc":
        module, qualname, args, attrs = f
        if type(module) is not str or type(qualname) is not str or type(attrs) is not dict:
            raise ValueError("exc")
        args = tuple(args)
        cls = _lookup(module, qualname)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            exc = _standin(module, qualname)(*args)
        else:
            try:
                exc = cls(*args)
            except Exception:
                exc = BaseException.__new__(cls)
                exc.args = args
        for name, v in attrs.items():
            if type(name) is str and not name.startswith("__"):
                try:
                    setattr(exc, name, v)
                except (AttributeError, TypeError):
                    pass
        return exc
    if kind == "sqlite3.Row":
        keys, values = f
        return _sqlite_row(list(keys), tuple(values))
    if kind in ("enum", "structseq", "namedtuple"):
        module, qualname = f[0], f[1]
        if type(module) is not str or type(qualname) is not str:
            raise ValueError(kind)
    if kind == "enum":
        module, qualname, value = f
        cls = _lookup(module, qualname)
        if isinstance(cls, type) and issubclass(cls, _Enum):
            return cls(value)
        return value
    if kind == "structseq":
        module, qualname, visible, extra = f
        cls = _lookup(module, qualname)
        if isinstance(cls, type) and hasattr(cls, "n_sequence_fields"):
            return cls(tuple(visible), dict(extra))
        return tuple(visible)
    if kind == "namedtuple":
        module, qualname, items = f
        cls = _lookup(module, qualname)
        if isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_make"):
            return cls._make(items)
        return tuple(items)
    if kind == "datetime":
        y, mo, d, h, mi, s, us, tz, fold = f
        _ints([y, mo, d, h, mi, s, us, fold], 8)
        if type(tz) is NotRebuilt:
            return NotRebuilt(kind, f, tz.why)
        return _dt.datetime(y, mo, d, h, mi, s, us, _tzinfo(tz), fold=fold)
    if kind == "date":
        return _dt.date(*_ints(f, 3))
    if kind == "time":
        h, mi, s, us, tz, fold = f
        _ints([h, mi, s, us, fold], 5)
        if type(tz) is NotRebuilt:
            return NotRebuilt(kind, f, tz.why)
        return _dt.time(h, mi, s, us, _tzinfo(tz), fold=fold)
    if kind == "timedelta":
        return _dt.timedelta(*_ints(f, 3))
    if kind == "timezone":
        if not 1 <= len(f) <= 2 or type(f[0]) is not _dt.timedelta or (len(f) == 2 and type(f[1]) is not str):
            raise ValueError("timezone")
        return _dt.timezone(*f)
    if kind == "zoneinfo":
        if len(f) != 1:
            raise ValueError("zoneinfo")
        return _zoneinfo(f[0])
    if kind == "decimal":
        if len(f) != 1 or type(f[0]) is not str or len(f[0]) > 4096:
            raise ValueError("decimal")
        return _stdlib_module("decimal").Decimal(f[0])
    if kind == "complex":
        if len(f) != 2 or not all(type(x) is float for x in f):
            raise ValueError("complex")
        return complex(*f)
    if kind == "bytearray":
        # bytes only: bytearray(10**10) would allocate what the file never held
        if len(f) != 1 or type(f[0]) is not bytes:
            raise ValueError("bytearray")
        return bytearray(f[0])
    raise ValueError(f"unknown EXT_OBJECT kind {kind!r}")


def _tzinfo(tz):
    if tz is None or isinstance(tz, _dt.tzinfo):
        return tz
    raise ValueError("tzinfo")


# ------------------------------------------------ creating the file

import errno as _errno
import fcntl as _fcntl
import stat as _stat
import itertools as _itertools

_tmp_counter = _itertools.count()
_O_CLOEXEC = getattr(_os, "O_CLOEXEC", 0)


def recording_busy(path) -> bool:
    """Does another recorder hold the recording file at *path* (its lock)?"""
    try:
        fd = _os.open(path, _os.O_RDONLY | _os.O_NOFOLLOW | _os.O_NONBLOCK | _O_CLOEXEC)
    except OSError:
        return False
    try:
        if not _stat.S_ISREG(_os.fstat(fd).st_mode):
            return False
        try:
            _fcntl.flock(fd, _fcntl.LOCK_SH | _fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False
    finally:
        _os.close(fd)


def create_recording(path) -> int:
    """The Python backend's twin of writer.cpp's create_recording: a symlink
    at *path* is replaced, never followed (a fresh temporary file made with
    O_EXCL|O_NOFOLLOW, renamed into place), the file holds an advisory lock
    while it is written, and a file another recorder holds is refused
    (EBUSY). A non-regular file (/dev/null, a FIFO) is opened as it is."""
    try:
        st = _os.lstat(path)
    except OSError:
        st = None
    if st is not None and _stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(_errno.EISDIR, _os.strerror(_errno.EISDIR), path)
    if st is not None and not _stat.S_ISLNK(st.st_mode) and not _stat.S_ISREG(st.st_mode):
        return _os.open(path, _os.O_WRONLY | _os.O_NOFOLLOW | _O_CLOEXEC)
    if st is not None and _stat.S_ISREG(st.st_mode) and recording_busy(path):
        raise OSError(_errno.EBUSY, _os.strerror(_errno.EBUSY), path)
    folder, base = _os.path.split(path)
    for _ in range(100):
        tmp = _os.path.join(folder, f".{base}.{_os.getpid()}.{next(_tmp_counter)}.tmp")
        try:
            fd = _os.open(tmp, _os.O_WRONLY | _os.O_CREAT | _os.O_EXCL | _os.O_NOFOLLOW | _O_CLOEXEC, 0o600)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(_errno.EEXIST, _os.strerror(_errno.EEXIST), path)
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        _os.rename(tmp, path)
    except BaseException:
        _os.close(fd)
        try:
            _os.unlink(tmp)
        except OSError:
            pass
        raise
    return fd


# ------------------------------------------------ fork and exit handling

#: Every live writer of this process (both backends).
_live = _weakref.WeakSet()


def track_writer(writer) -> None:
    _live.add(writer)


def _after_fork_in_child():
    for w in list(_live):
        try:
            w._forked_child()
        except Exception:  # pragma: no cover - never let a writer break fork
            pass


def _close_all_at_exit():
    for w in list(_live):
        try:
            w.close()
        except Exception:
            pass


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)
_atexit.register(_close_all_at_exit)


def forked_error(owner_pid: int) -> RecordingError:
    return RecordingError(
        f"this StreamWriter belongs to process {owner_pid}, not to this forked "
        f"child ({_real_os.getpid()}): its stream is the parent's — open the child's own "
        f"writer with writer.child_writer(path, preamble)")


def crc32(data) -> int:
    return _crc32(data) & 0xFFFFFFFF


def scan_frames(path):
    """Yield ``(index, offset, length, crc_ok)`` for each frame of *path*
    without decoding payloads (index 0 is the preamble).  Stops at a torn
    frame (yielding it with ``crc_ok=None``)."""
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
        if head[:len(MAGIC)] != MAGIC:
            raise format_error("bad magic: not a retrace recording", 0, 0, 0,
                               "check the path; this file was not written by retracesoftware")
        offset = HEADER_SIZE
        index = 0
        while True:
            fh = f.read(FRAME_HEADER_SIZE)
            if not fh:
                return
            if len(fh) < FRAME_HEADER_SIZE:
                yield index, offset, None, None
                return
            length, crc = FRAME_HEADER.unpack(fh)
            if index:
                length &= ~FRAME_COMPRESSED
            payload = f.read(length)
            if len(payload) < length:
                yield index, offset, length, None
                return
            yield index, offset, length, crc32(payload) == crc
            offset += FRAME_HEADER_SIZE + length
            index += 1
