"""Environment values kept out of the recording (``--redact``): the
record side's markers and the replay side's placeholders and
``RedactedValue`` (docs/RELIABILITY.md, "Sharing recordings")."""
from __future__ import annotations

import sys

from retracesoftware.install import report
from retracesoftware.utils import DISABLED, INTERNAL

_write_stderr = report.write   # the user's stderr
_flush_stderr = sys.stderr.flush

#: Tape value of a redacted environment read: this prefix + the variable's name.
REDACTED_MARKER = "\x00retrace:redacted:"
_ENVIRON_GETITEM = "os._Environ.__getitem__"   # the boundary name configs/os.toml gives it


class RedactedValue:
    """What a replayed program gets for an environment variable redacted at
    record time (``--redact NAME``). Reading it is fine; *using* it (str(),
    printing, comparing, hashing, concatenating, any str method, truth value,
    os.fspath, …) stops the replay with one line and exit code 4: the value
    is not in the recording, so nothing computed from it could replay."""

    __slots__ = ("_name", "_session")

    def __init__(self, name, session):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_session", session)

    def _used(self, *args, **kwargs):
        name = object.__getattribute__(self, "_name")
        object.__getattribute__(self, "_session").stop_early(
            f"the program used the environment variable {name}, whose value was redacted from this "
            f"recording (--redact {name}) — replay stopped there; re-record without --redact {name} "
            f"to replay past it")

    def __getattr__(self, attr):
        self._used()

    def __setattr__(self, attr, value):
        self._used()


for _dunder in ("__str__", "__repr__", "__format__", "__bytes__", "__fspath__", "__hash__", "__bool__",
                "__len__", "__iter__", "__contains__", "__getitem__", "__eq__", "__ne__", "__lt__",
                "__le__", "__gt__", "__ge__", "__add__", "__radd__", "__mul__", "__rmul__", "__mod__",
                "__rmod__", "__index__", "__int__", "__float__", "__reduce__", "__reduce_ex__",
                "__copy__", "__deepcopy__", "__call__"):
    setattr(RedactedValue, _dunder, RedactedValue._used)
del _dunder



def install_redaction(session, redaction=None):
    """Environment values kept out of the recording (docs/RELIABILITY.md,
    "Sharing recordings"), however the program reads them: single reads,
    ``get``/``getenv``, ``copy()``, iteration and ``items()`` all go through
    ``_Environ.__getitem__``, for ``os.environ`` and ``os.environb``.

    Record: the program gets the real value; the tape gets the same call
    (``os._Environ.__getitem__``) with a marker as its result (masking.Redaction).
    Replay: a marker takes the value the variable has in the replaying
    process when set there, else a placeholder of the same length (one
    warning per variable); calls whose arguments carry a placeholder are not
    held to their recorded argument fingerprint."""
    from _thread import get_ident
    from retracesoftware.install import masking
    import os as os_module
    environ = os_module.environ
    environb = getattr(os_module, "environb", None)
    cls = type(environ)
    installed = cls.__dict__["__getitem__"]
    gate = session.system.gate
    fsdecode = os_module.fsdecode
    if session.mode == "record":
        redaction = redaction or masking.Redaction()
        pending = {}
        tape = session.system.patch_function(lambda self, key: pending.pop(get_ident()), _ENVIRON_GETITEM)
        words, prefixes = masking.REDACT_WORDS, masking.REDACT_PREFIXES

        def candidate(name):
            if name in redaction.no_redact:
                return False
            upper = name.upper()
            return (name in redaction.redact or upper.endswith("_URL") or upper.startswith(prefixes)
                    or any(w in upper for w in words))

        def getitem(self, key):
            if (self is environ or self is environb) and gate.phase == INTERNAL:
                name = key if type(key) is str else fsdecode(key) if type(key) is bytes else None
                if name is not None and candidate(name):
                    previous = gate.swap(DISABLED)
                    try:
                        real = installed(self, key)       # unrecorded: the gateway passes through
                    except KeyError:
                        real = None
                    finally:
                        gate.phase = previous
                    marker = redaction.marker(name, real) if real is not None else None
                    if marker is not None:
                        pending[get_ident()] = marker
                        tape(self, key)
                        return real
            return installed(self, key)
    else:
        warned = set()
        placeholders = set()

        def exempt(args, kwargs):
            for a in (*args, *kwargs.values()):
                items = a if type(a) in (tuple, list) else (a,)
                for x in items:
                    if type(x) in (str, bytes, bytearray, memoryview):
                        data = bytes(x) if type(x) is not str else x
                        for p in placeholders:
                            if (p if type(data) is str else p.encode()) in data:
                                return True
            return False

        def getitem(self, key):
            value = installed(self, key)
            if type(value) is str and value.startswith(REDACTED_MARKER) and "\x00" not in value[1:]:
                return RedactedValue(value[len(REDACTED_MARKER):], session)   # recordings before markers
            parsed = masking.parse_marker(value)
            if parsed is None:
                return value
            name, template = parsed
            previous = gate.swap(DISABLED)
            try:
                real = installed(self, key)               # this process's own value
            except KeyError:
                real = None
            finally:
                gate.phase = previous
            if real is None:
                text = masking.fill(template, name)
                placeholders.add(masking.placeholder(name, template.count(masking.SECRET_CHAR)))
                session.system.fingerprint_exempt = exempt
                if name not in warned:
                    warned.add(name)
                    previous = gate.swap(DISABLED)     # our warning is not the program's output
                    try:
                        _write_stderr(f"retrace: warning: the environment variable {masking.printable(name)} was "
                                      f"redacted from this recording and is not set here: the program gets a "
                                      f"placeholder of the same length — set {masking.printable(name)} to replay "
                                      f"with its value\n")
                        _flush_stderr()
                    finally:
                        gate.phase = previous
                return text.encode("utf-8", "surrogateescape") if type(value) is bytes else text
            return real
    session.installer.patch(cls, "__getitem__", getitem)
