"""Locating keys in TOML: a scanner over valid TOML text that records the
line on which each key path appears (tomllib reports positions only for
syntax errors; install/config.py's errors name the line). Split out of
install/config.py."""
from __future__ import annotations

import re

from retracesoftware.utils.log import Log

TYPE_CHECKING = False   # (typing is not imported at start-up)
if TYPE_CHECKING:
    from typing import Sequence  # noqa: F401

__all__ = ["KeyLines", "BARE_KEY"]

log = Log("retracesoftware.install.config")   # (utils/log.py: logging is not imported at start-up)


BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\", "e": "\x1b"}


class KeyLines:
    """Map key paths (tuples of str keys and int array indexes) to 1-based
    line numbers.  Runs only on text tomllib accepted, so it can be lenient;
    if it ever trips, lookups fall back to the nearest recorded prefix."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[tuple, int] = {}
        self._aot_count: dict[tuple, int] = {}
        try:
            self._document()
        except Exception:  # pragma: no cover - best effort by design
            log.debug("key-line scan stopped early", exc_info=True)

    def line_of(self, path: Sequence) -> int:
        path = tuple(path)
        for i in range(len(path), 0, -1):
            line = self.lines.get(path[:i])
            if line is not None:
                return line
        return 1

    # -- helpers --------------------------------------------------------
    def _peek(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def _advance_to(self, end: int) -> None:
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def _ws(self) -> None:
        t, n = self.text, len(self.text)
        while self.pos < n and t[self.pos] in " \t":
            self.pos += 1

    def _ws_nl(self) -> None:
        t, n = self.text, len(self.text)
        while self.pos < n:
            c = t[self.pos]
            if c in " \t\r":
                self.pos += 1
            elif c == "\n":
                self.pos += 1
                self.line += 1
            elif c == "#":
                end = t.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                break

    def _record(self, path: tuple, line: int) -> None:
        for i in range(1, len(path) + 1):
            self.lines.setdefault(path[:i], line)

    # -- grammar --------------------------------------------------------
    def _document(self) -> None:
        current: tuple = ()
        n = len(self.text)
        while True:
            self._ws_nl()
            if self.pos >= n:
                return
            line = self.line
            if self._peek("[["):
                self.pos += 2
                self._ws()
                key = self._key()
                self._ws()
                self.pos += 2  # ]]
                index = self._aot_count.get(key, 0)
                self._aot_count[key] = index + 1
                current = key + (index,)
                self._record(current, line)
            elif self._peek("["):
                self.pos += 1
                self._ws()
                key = self._key()
                self._ws()
                self.pos += 1  # ]
                current = key
                self._record(current, line)
            else:
                key = self._key()
                self._ws()
                self.pos += 1  # =
                self._record(current + key, line)
                self._value(current + key)

    def _key(self) -> tuple:
        parts = []
        while True:
            self._ws()
            c = self.text[self.pos]
            if c in "\"'":
                parts.append(self._string())
            else:
                m = BARE_KEY.match(self.text, self.pos)
                if m is None:
                    raise ValueError(f"no key at {self.pos}")
                parts.append(m.group())
                self.pos = m.end()
            self._ws()
            if self._peek("."):
                self.pos += 1
                continue
            return tuple(parts)

    def _string(self) -> str:
        t = self.text
        for delim in ('"""', "'''"):
            if self._peek(delim):
                start = self.pos + 3
                i = start
                while True:
                    j = t.find(delim, i)
                    if j < 0:
                        raise ValueError("unterminated string")
                    if delim == '"""':
                        # a backslash-escaped quote does not close
                        k, backslashes = j - 1, 0
                        while k >= start and t[k] == "\\":
                            backslashes += 1
                            k -= 1
                        if backslashes % 2:
                            i = j + 1
                            continue
                    # up to two extra quotes may precede the closing delimiter
                    end = j + 3
                    while end < len(t) and t[end] == delim[0] and end - j < 5:
                        end += 1
                    value = t[start : end - 3]
                    self._advance_to(end)
                    return value
        if self._peek("'"):
            end = t.index("'", self.pos + 1)
            value = t[self.pos + 1 : end]
            self.pos = end + 1
            return value
        # basic string with escapes
        out = []
        i = self.pos + 1
        while True:
            c = t[i]
            if c == '"':
                self.pos = i + 1
                return "".join(out)
            if c == "\\":
                e = t[i + 1]
                if e == "u":
                    out.append(chr(int(t[i + 2 : i + 6], 16)))
                    i += 6
                elif e == "U":
                    out.append(chr(int(t[i + 2 : i + 10], 16)))
                    i += 10
                else:
                    out.append(_ESCAPES.get(e, e))
                    i += 2
                continue
            out.append(c)
            i += 1

    def _value(self, path: tuple) -> None:
        self._ws()
        c = self.text[self.pos]
        if c in "\"'":
            self._string()
        elif c == "[":
            self.pos += 1
            index = 0
            while True:
                self._ws_nl()
                if self._peek("]"):
                    self.pos += 1
                    return
                self._record(path + (index,), self.line)
                self._value(path + (index,))
                index += 1
                self._ws_nl()
                if self._peek(","):
                    self.pos += 1
        elif c == "{":
            self.pos += 1
            while True:
                self._ws_nl()
                if self._peek("}"):
                    self.pos += 1
                    return
                line = self.line
                key = self._key()
                self._ws()
                self.pos += 1  # =
                self._record(path + key, line)
                self._value(path + key)
                self._ws_nl()
                if self._peek(","):
                    self.pos += 1
        else:
            t, n = self.text, len(self.text)
            while self.pos < n and t[self.pos] not in ",]}\n\r#":
                self.pos += 1
