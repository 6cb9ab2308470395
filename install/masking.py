"""Masking secrets in everything retrace displays (docs/RELIABILITY.md, "Secrets").

`mask(text)` is applied to our own output only — ``inspect`` (text and
``--json``), divergence reports, error and warning lines — never to the
program's own output and never to the recording (for that: ``--redact``).

Two things are masked:

* the values of environment variables whose *names* look secret
  (`looks_secret`), wherever they appear in the text (values of 4+
  characters, from this process's environment);
* strings that *look* like secrets whatever their origin: ``name=value`` /
  ``name: value`` / ``--name value`` where the name looks secret, HTTP
  ``Bearer``/``Basic`` credentials, passwords in URLs, PEM private keys, JWTs,
  and the well-known token shapes (AWS access key ids, GitHub, Slack,
  OpenAI-style ``sk-`` keys).
"""
from __future__ import annotations

import os
import re

MASK = "***"
_posix_environ = __import__("posix").environ

#: Name fragments that make an environment variable secret.
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "KEY", "AUTH", "CREDENTIAL",
                "COOKIE", "SESSION", "PRIVATE", "SIGNATURE", "APIKEY", "PASS", "PWD")
_NOT_SECRET = frozenset({"PWD", "OLDPWD", "XAUTHORITY", "SSH_AUTH_SOCK", "KEYMAP", "GPG_AGENT_INFO",
                         "SESSION_MANAGER", "XDG_SESSION_ID", "XDG_SESSION_TYPE", "XDG_SESSION_CLASS",
                         "XDG_SESSION_DESKTOP", "DBUS_SESSION_BUS_ADDRESS"})
_WORD_RE = re.compile(r"[A-Za-z][a-z]*|[0-9]+")

_NAME = (r"[A-Za-z0-9_.-]*(?:token|secret|passw(?:or)?d|passphrase|api[_-]?key|access[_-]?key|"
         r"private[_-]?key|secret[_-]?key|auth|credential|cookie|session[_-]?id|signature)[A-Za-z0-9_.-]*")
_OPTION_SOURCE = r"(?i)--?" + _NAME
#: (pattern, flags, replacement): compiled on first use (`_patterns`): they
#: serve our displays only (error lines, inspect), and compiling them took
#: ~3 ms of every start.
_PATTERN_SOURCES = [
    # PEM private keys (whole block)
    (r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S,
     lambda m: f"-----BEGIN {m.group(1)}PRIVATE KEY-----{MASK}-----END {m.group(1)}PRIVATE KEY-----"),
    # Authorization headers
    (r"(?i)\b(bearer|basic|token)(\s+)([A-Za-z0-9._~+/=-]{8,})", 0,
     lambda m: f"{m.group(1)}{m.group(2)}{MASK}"),
    # user:password@host in URLs
    (r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]+:)([^\s/@]+)(@)", 0,
     lambda m: f"{m.group(1)}{MASK}{m.group(3)}"),
    # name=value, name: value, "name": "value"
    # (":" only with a quote before it or a space after it: "auth.py:12" is a place)
    (r"(?i)(\b" + _NAME + r"(?:\s*=\s*|['\"]\s*:\s*|:\s+))(['\"]?)([^\s'\",;&)}\]]+)", 0,
     lambda m: f"{m.group(1)}{m.group(2)}{MASK}"),
    # --password value (command lines)
    (r"(?i)(--?" + _NAME + r"\s+)(['\"]?)([^\s'\"-][^\s'\"]*)", 0,
     lambda m: f"{m.group(1)}{m.group(2)}{MASK}"),
    # well-known token shapes
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", 0, lambda m: MASK),
    (r"\bgh[pousr]_[A-Za-z0-9]{20,}\b", 0, lambda m: MASK),
    (r"\bgithub_pat_[A-Za-z0-9_]{20,}\b", 0, lambda m: MASK),
    (r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b", 0, lambda m: MASK),
    (r"\bsk-[A-Za-z0-9_-]{20,}\b", 0, lambda m: MASK),
    (r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\b", 0, lambda m: MASK),
]


def _patterns():
    """The compiled _PATTERN_SOURCES, [(regex, replacement)]."""
    global _compiled
    if _compiled is None:
        _compiled = [(re.compile(source, flags), repl) for source, flags, repl in _PATTERN_SOURCES]
    return _compiled


_compiled = None


def _option():
    return re.compile(_OPTION_SOURCE)     # (re's own cache keeps it)


def __getattr__(name):
    # masking._PATTERNS / masking._OPTION, compiled when first asked for
    # (views/_common.py's Masker reads _PATTERNS).
    if name == "_PATTERNS":
        return _patterns()
    if name == "_OPTION":
        return _option()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text, keep: str = "") -> str:
    """*text* with control characters (C0, DEL, C1, bidi overrides) escaped
    as ``\\xNN``/``\\uNNNN``: text from a recording cannot drive the terminal.
    Tab and newline are escaped too unless in *keep*."""
    if not isinstance(text, str):
        text = str(text)

    def esc(m):
        c = ord(m.group(0))
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    text = _CONTROLS.sub(esc, text)
    for c in "\t\n":
        if c not in keep:
            text = text.replace(c, "\\t" if c == "\t" else "\\n")
    return text


def looks_secret(name: str) -> bool:
    """Does an environment variable's *name* say its value is a secret?"""
    upper = name.upper()
    if upper in _NOT_SECRET:
        return False
    words = {w.upper() for w in _WORD_RE.findall(name.replace("_", " ").replace("-", " "))}
    words |= set(upper.replace("-", "_").split("_"))
    if words & set(SECRET_WORDS):
        return True
    # APITOKEN, DBPASSWORD, MYSECRETKEY: long fragments inside one word
    return any(w in upper for w in ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE",
                                    "APIKEY", "COOKIE"))


def _real_environ() -> dict[str, str]:
    # posix.environ: the process's real environment as it started, never the
    # os.environ the installer patched (reading that at replay would be a
    # boundary call, and at record it would be recorded).
    return {os.fsdecode(k): os.fsdecode(v) for k, v in dict(_posix_environ).items()}


def secret_values(environ=None) -> dict[str, str]:
    """value -> variable name, for secret-looking variables with values of 4+ characters."""
    environ = _real_environ() if environ is None else environ
    found = {}
    for name in list(environ):
        try:
            value = environ[name]
        except KeyError:
            continue
        if isinstance(value, str) and len(value) >= 4 and looks_secret(name):
            found[value] = name
    return found


def mask(text: str, environ=None) -> str:
    """*text* with secret values and secret-looking strings replaced by ``***``
    and control characters escaped (`printable`, newlines and tabs kept)."""
    if not isinstance(text, str) or not text:
        return text
    text = printable(text, keep="\n\t")
    for value in sorted(secret_values(environ), key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    for pattern, repl in _patterns():
        text = pattern.sub(repl, text)
    return text


def mask_data(value, environ=None):
    """`mask` applied to every string inside lists/tuples/dicts (for --json)."""
    if isinstance(value, str):
        return mask(value, environ)
    if isinstance(value, (list, tuple)):
        items = [mask_data(v, environ) for v in value]
        # argv-style lists: ["--password", "x"] masks the word after the option
        for i in range(len(items) - 1):
            if isinstance(items[i], str) and _option().fullmatch(items[i]) and isinstance(items[i + 1], str):
                items[i + 1] = MASK
        return type(value)(items)
    if isinstance(value, dict):
        return {k: mask_data(v, environ) for k, v in value.items()}
    return value


# ------------------------------------------------------------ redaction
# What never enters a recording (docs/RELIABILITY.md, "Sharing recordings").
# Environment values whose names match REDACT_PATTERNS (or --redact NAME, or
# `redact = [...]` in .retrace/redact.toml) are stored as markers however the
# program reads them; a replay fills a marker from its own environment, or
# with a placeholder of the same length.

#: Documented list: a name containing one of these (case-insensitive)…
REDACT_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
#: …or starting with one of these.
REDACT_PREFIXES = ("AWS_",)
#: *_URL values: only the password of user:password@ is redacted.
_URL_PASSWORD = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*:)([^\s/@]+)(@)")
#: Tape value of a redacted read: this prefix + NAME + NUL + template, where
#: the template is the value with each secret character replaced by SECRET_CHAR.
MARKER = "\x00retrace:redacted:"
SECRET_CHAR = "\x01"


class Redaction:
    """Which environment variables a recording keeps out, and how."""

    def __init__(self, redact=(), no_redact=(), config_dir=None):
        extra, skip = _redact_config(config_dir)
        self.redact = frozenset(redact) | extra
        self.no_redact = frozenset(no_redact) | skip
        self.no_redact -= frozenset(redact)

    def template(self, name: str, value: str):
        """The value as the recording holds it (secret characters replaced by
        SECRET_CHAR), or None when nothing of it is secret."""
        if type(name) is not str or type(value) is not str or name in self.no_redact:
            return None
        upper = name.upper()
        if name in self.redact or any(w in upper for w in REDACT_WORDS) or upper.startswith(REDACT_PREFIXES):
            return SECRET_CHAR * len(value)
        if upper.endswith("_URL"):
            m = _URL_PASSWORD.match(value)
            if m:
                return m.group(1) + SECRET_CHAR * len(m.group(2)) + value[m.end(2):]
        return None

    def marker(self, name: str, value):
        """The tape value for a read of *name* giving *value* (str or bytes), or None."""
        if type(value) is bytes:
            text = value.decode("utf-8", "surrogateescape")
            tpl = self.template(name, text)
            if tpl is None:
                return None
            return (MARKER + name + "\x00" + tpl).encode("utf-8", "surrogateescape")
        tpl = self.template(name, value)
        return None if tpl is None else MARKER + name + "\x00" + tpl

    def cli_args(self) -> list:
        out = []
        for name in sorted(self.redact):
            out += ["--redact", name]
        for name in sorted(self.no_redact):
            out += ["--no-redact", name]
        return out


def _redact_config(config_dir):
    """``.retrace/redact.toml`` (in the working directory): ``redact = [...]``
    and ``no_redact = [...]`` lists of names."""
    path = os.path.join(config_dir or os.getcwd(), ".retrace", "redact.toml")
    try:
        with open(path, "rb") as fh:
            import tomllib
            data = tomllib.load(fh)
    except (OSError, ValueError):
        return frozenset(), frozenset()
    def names(key):
        v = data.get(key, [])
        return frozenset(x for x in v if type(x) is str) if type(v) is list else frozenset()
    return names("redact"), names("no_redact")


def placeholder(name: str, length: int) -> str:
    """A stand-in of *length* characters for a redacted secret."""
    text = f"<redacted:{name}>"
    if length <= len(text):
        return "*" * length if length < 8 else text[:length - 1] + ">"
    return text + "*" * (length - len(text))


def parse_marker(value):
    """(name, template as str) of a marker value (str or bytes), else None."""
    if type(value) is bytes:
        if not value.startswith(MARKER.encode()):
            return None
        value = value.decode("utf-8", "surrogateescape")
    elif type(value) is not str or not value.startswith(MARKER):
        return None
    name, sep, tpl = value[len(MARKER):].partition("\x00")
    if not sep:
        return None
    return name, tpl


def fill(template: str, name: str) -> str:
    """The template with its secret characters replaced by a placeholder."""
    n = template.count(SECRET_CHAR)
    if not n:
        return template
    start = template.index(SECRET_CHAR)
    return template[:start] + placeholder(name, n) + template[start + n:].replace(SECRET_CHAR, "*")
