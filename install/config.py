"""Boundary configs: TOML files that say which modules, functions and types
cross the record/replay boundary (DESIGN §6, docs/CONFIGS.md).

Public API::

    load_config(search_path=None, *, python_version=None, installed=None,
                platform=None) -> BoundaryConfig
    default_search_path() -> list of directories, highest precedence first
    load_file(path) -> ConfigFile          # one file, validated, not gated
    parse_text(text, filename) -> ConfigFile

Every problem raises :class:`~retracesoftware.utils.errors.ConfigError` with a
single line ``<file>:<line>: <key path>: <problem> — <expected>``.  tomllib
reports positions only for syntax errors, so :class:`_KeyLines` re-scans the
(already valid) TOML text to find the line on which each key path appears.

Pure Python, no import of the modules being configured: the loader decides
*what* is the boundary; the patcher decides whether a named attribute exists.
"""
from __future__ import annotations

import keyword
import marshal
import os
import re
import sys
# Imported here, before any install, in record, replay and fork alike: the
# two modules whose import makes boundary calls (random: its seed and the
# bound Random; selectors: its epoll probe) that our runtime may import after
# install in one mode only (the replay debugger's checkpoints import
# tempfile -> random; the fork view's imports loaded socket -> selectors), so
# a recording where the program's import of one was recorded diverged
# there. Keep them loaded in every mode so a program's import of them is
# the same. (Importing socket and tempfile themselves instead, which make no
# boundary call of their own, was 3-4 ms more of every start.)
import random  # noqa: F401
import selectors  # noqa: F401
from types import MappingProxyType
TYPE_CHECKING = False   # (typing is 2.5 ms of every start-up: imported by type checkers only)
if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping, Sequence, Union  # noqa: F401

# The interpreter's own sha256 (the digests here are of a few kB): hashlib
# would load OpenSSL (~3 ms of every start); same digests.
try:
    from _sha2 import sha256 as _sha256          # 3.12+
except ImportError:
    try:
        from _sha256 import sha256 as _sha256    # 3.11
    except ImportError:                           # pragma: no cover - a build without them
        from hashlib import sha256 as _sha256


def _Path(*args):
    """pathlib.Path, imported when first used: the default start path
    (load_config with a valid cache, boundary.py's index file) works on
    str paths, and pathlib brings urllib.parse and ipaddress (~3 ms of
    every record and replay start)."""
    from pathlib import Path as _Path
    return _Path(*args)


def __getattr__(name):
    if name == "Path":        # (was imported here)
        from pathlib import Path
        return Path
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _tomllib():
    # Imported when a file is parsed: a valid compiled-config cache
    # (load_config) parses nothing.
    if sys.version_info >= (3, 11):  # PYVERSIONS: tomllib is stdlib from 3.11
        import tomllib
    else:  # pragma: no cover - requires-python is >=3.11; kept for the tomli path
        import tomli as tomllib
    return tomllib

from retracesoftware.utils.log import Log
from retracesoftware.utils.errors import ConfigError
from retracesoftware.utils.records import field, fields as _fields, record, replace as _replace
from retracesoftware.install.config_versions import (  # noqa: F401  (parse_version is public here too)
    COMPARE as _COMPARE,
    normalise_distribution as _normalise_distribution,
    normalise_python_version as _normalise_python_version,
    parse_python_spec as _parse_python_spec,
    parse_version,
    version_key as _version_key,
)
from retracesoftware.install.toml_key_lines import BARE_KEY as _BARE_KEY, KeyLines as _KeyLines

__all__ = [
    "BoundaryConfig",
    "ConfigError",
    "ConfigFile",
    "ModuleConfig",
    "Requires",
    "TypeConfig",
    "When",
    "default_search_path",
    "load_config",
    "load_file",
    "parse_text",
    "parse_version",
]

log = Log("retracesoftware.install.config")   # (utils/log.py: logging is not imported at start-up)

#: Bumped when the meaning of a directive changes; part of every digest.
SCHEMA_VERSION = 1

ENV_VAR = "RETRACE_MODULES_PATH"
USER_DIR = os.path.join(".retrace", "modules")

_EMPTY: Mapping = MappingProxyType({})

# --------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------

_TOP_LEVEL = ("requires", "modules")
_REQUIRES_KEYS = ("distribution", "min_version", "max_version")
_MODULE_LISTS = ("proxy", "disable", "bind", "immutable", "patch_hash")
_MODULE_KEYS = _MODULE_LISTS + ("callback", "summarise", "when", "types")
_TYPE_LISTS = ("methods", "getters")
_TYPE_KEYS = _TYPE_LISTS + ("construct", "callback", "summarise", "when")
_WHEN_KEYS = ("python", "platform")
# A module attribute has exactly one role.  ("types" are the keys of the
# types table.)  patch_hash may overlap anything: a bound type can also get
# deterministic hashes.  proxy + types may overlap: a factory function can
# share its name with the type of its results (select.poll).
_EXCLUSIVE_ROLES = ("proxy", "disable", "bind", "immutable", "types")
_COMPATIBLE_ROLES = frozenset({frozenset(("proxy", "types"))})
# Directives whose items are type names (may be dotted for nested classes).
_DOTTED_ITEMS = ("immutable", "patch_hash")

# Names under these keys are user data (module/type/function names), always
# shown quoted in key paths: modules."time", types."socket", callback."signal".
_NAME_PARENTS = ("modules", "types", "callback", "summarise")


@record
class When:
    """Gate on the interpreter: ``python`` clauses and/or ``platform`` names."""

    python: tuple[tuple[str, tuple[int, ...]], ...] = ()
    platform: tuple[str, ...] = ()

    def matches(self, python_version: tuple[int, ...], platform: str) -> bool:
        for op, version in self.python:
            have = tuple(python_version[: len(version)])
            if not _COMPARE[op](have, version):
                return False
        if self.platform and platform not in self.platform:
            return False
        return True


@record
class TypeConfig:
    """``[modules."<m>".types."<name>"]``: a type whose instances are bound."""

    name: str
    methods: tuple[str, ...] = ()
    getters: tuple[str, ...] = ()
    construct: bool = True
    callback: Mapping[str, tuple[Union[int, str], ...]] = field(default_factory=lambda: _EMPTY)
    when: When | None = None
    summarise: Mapping[str, tuple[Union[int, str], ...]] = field(default_factory=lambda: _EMPTY)


@record
class ModuleConfig:
    """``[modules."<name>"]``: the boundary directives for one module."""

    name: str
    proxy: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    bind: tuple[str, ...] = ()
    immutable: tuple[str, ...] = ()
    patch_hash: tuple[str, ...] = ()
    callback: Mapping[str, tuple[Union[int, str], ...]] = field(default_factory=lambda: _EMPTY)
    types: Mapping[str, TypeConfig] = field(default_factory=lambda: _EMPTY)
    when: When | None = None
    #: function -> argument positions / keyword names recorded as a summary (ARGS)
    summarise: Mapping[str, tuple[Union[int, str], ...]] = field(default_factory=lambda: _EMPTY)


@record
class Requires:
    """File-level ``[requires]``: apply the file only if the distribution is
    installed at ``min_version <= v < max_version`` (bounds optional)."""

    distribution: str
    min_version: str | None = None
    max_version: str | None = None

    def satisfied(self, installed_version: str | None) -> bool:
        if installed_version is None:
            return False
        try:
            have = _version_key(installed_version)
        except ValueError:
            log.warning(
                "%s: installed version %r is not a PEP 440 version; "
                "treating the [requires] gate as unmet",
                self.distribution,
                installed_version,
            )
            return False
        if self.min_version is not None and have < _version_key(self.min_version):
            return False
        if self.max_version is not None and not have < _version_key(self.max_version):
            return False
        return True


@record
class ConfigFile:
    """One validated file, before gating (``requires``/``when`` unapplied)."""

    path: str
    requires: Requires | None
    modules: Mapping[str, ModuleConfig]
    #: module name -> line of its table (for duplicate-definition errors)
    lines: Mapping[str, int] = field(default_factory=lambda: _EMPTY)


@record
class BoundaryConfig:
    """The effective boundary for this interpreter: gated, overrides applied."""

    #: module import name -> ModuleConfig (sorted by name; ``when`` resolved)
    modules: Mapping[str, ModuleConfig]
    #: module import name -> path of the file that defined it
    sources: Mapping[str, str]
    #: sha256 hex of the normalised effective config (recording preamble)
    digest: str
    #: every file read, highest precedence first (applied or gated out)
    files: tuple[str, ...] = ()


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def render_key_path(path: Sequence) -> str:
    """``("modules", "time", "proxy", 2)`` -> ``modules."time".proxy[2]``."""
    out = ""
    parent = None
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            if parent in _NAME_PARENTS or not _BARE_KEY.fullmatch(part):
                import json
                text = json.dumps(part, ensure_ascii=False)
            else:
                text = part
            out += ("." if out else "") + text
        parent = part
    return out


def _config_error(file: str, line: int | None, key: str | None, problem: str, expected: str) -> ConfigError:
    where = f"{file}:{line}" if line is not None else file
    head = f"{where}: {key}: " if key else f"{where}: "
    message = f"{head}{problem} — {expected}"
    message = " ".join(message.split())  # always exactly one line
    err = ConfigError(message)
    err.file, err.line, err.key, err.problem, err.expected = file, line, key, problem, expected
    return err


def _suggest(word: str, valid: Sequence[str], what: str) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(word, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"expected one of {', '.join(valid)}"


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a float",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _valid_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _valid_dotted(name: str) -> bool:
    return bool(name) and all(_valid_identifier(p) for p in name.split("."))


_DIST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


class _Validator:
    def __init__(self, text: str, filename: str):
        self.filename = filename
        self.keys = _KeyLines(text)

    def error(self, path: Sequence, problem: str, expected: str) -> ConfigError:
        return _config_error(
            self.filename, self.keys.line_of(path), render_key_path(path), problem, expected
        )

    # -- file -----------------------------------------------------------
    def file(self, doc: dict) -> ConfigFile:
        for key in doc:
            if key not in _TOP_LEVEL:
                kind = "table" if isinstance(doc[key], dict) else "key"
                raise self.error((key,), f"unknown top-level {kind}", _suggest(key, _TOP_LEVEL, kind))
        requires = self.requires(doc["requires"]) if "requires" in doc else None
        modules: dict[str, ModuleConfig] = {}
        lines: dict[str, int] = {}
        if "modules" in doc:
            table = doc["modules"]
            if not isinstance(table, dict):
                raise self.error(("modules",), f"got {_type_name(table)}", 'expected tables [modules."<name>"]')
            for name, body in table.items():
                modules[name] = self.module(name, body)
                lines[name] = self.keys.line_of(("modules", name))
        return ConfigFile(self.filename, requires, MappingProxyType(modules), MappingProxyType(lines))

    def requires(self, table: Any) -> Requires:
        path = ("requires",)
        if not isinstance(table, dict):
            raise self.error(path, f"got {_type_name(table)}", "expected a [requires] table")
        for key in table:
            if key not in _REQUIRES_KEYS:
                raise self.error(path + (key,), "unknown key", _suggest(key, _REQUIRES_KEYS, "key"))
        if "distribution" not in table:
            raise self.error(path, "missing 'distribution'", 'expected distribution = "<name on PyPI>"')
        dist = table["distribution"]
        if not isinstance(dist, str):
            raise self.error(path + ("distribution",), f"got {_type_name(dist)}", "expected a string")
        if not _DIST_RE.match(dist):
            raise self.error(
                path + ("distribution",), f"invalid distribution name {dist!r}", "expected a name like 'requests'"
            )
        bounds = {}
        for key in ("min_version", "max_version"):
            if key not in table:
                continue
            value = table[key]
            if not isinstance(value, str):
                raise self.error(path + (key,), f"got {_type_name(value)}", 'expected a version string like "2.31"')
            try:
                bounds[key] = _version_key(value)
            except ValueError:
                raise self.error(
                    path + (key,), f"unparsable version {value!r}", 'expected a PEP 440 version like "2.31" or "2.0rc1"'
                ) from None
        if len(bounds) == 2 and not bounds["min_version"] < bounds["max_version"]:
            raise self.error(
                path + ("max_version",),
                f"{table['max_version']!r} is not above min_version {table['min_version']!r}",
                "expected min_version < max_version (max_version is exclusive)",
            )
        return Requires(dist, table.get("min_version"), table.get("max_version"))

    # -- module ---------------------------------------------------------
    def module(self, name: str, body: Any) -> ModuleConfig:
        path = ("modules", name)
        if not name:
            raise self.error(path, "empty module name", 'expected a module import name like [modules."time"]')
        if not _valid_dotted(name):
            raise self.error(
                path, f"invalid module name {name!r}", 'expected a dotted import name like "os.path" or "_socket"'
            )
        if not isinstance(body, dict):
            raise self.error(path, f"got {_type_name(body)}", "expected a table of directives")
        for key in body:
            if key not in _MODULE_KEYS:
                raise self.error(path + (key,), "unknown directive", _suggest(key, _MODULE_KEYS, "directive"))
        lists = {key: self.name_list(path, key, body.get(key, []), dotted=key in _DOTTED_ITEMS) for key in _MODULE_LISTS}
        types: dict[str, TypeConfig] = {}
        if "types" in body:
            table = body["types"]
            if not isinstance(table, dict):
                raise self.error(path + ("types",), f"got {_type_name(table)}", 'expected tables [modules."<m>".types."<Type>"]')
            for tname, tbody in table.items():
                types[tname] = self.type_(path + ("types", tname), tname, tbody)
        value_types = set(lists["immutable"])
        self.exclusive(path, {**lists, "types": tuple(
            t for t, cfg in types.items() if cfg.construct or t not in value_types)})
        callback = self.callback(path, body.get("callback", {}))
        summarise = self.callback(path, body.get("summarise", {}), key="summarise")
        when = self.when(path, body["when"]) if "when" in body else None
        return ModuleConfig(
            name=name,
            callback=callback,
            summarise=summarise,
            types=MappingProxyType(types),
            when=when,
            **lists,
        )

    def type_(self, path: tuple, name: str, body: Any) -> TypeConfig:
        if not _valid_dotted(name):
            raise self.error(path, f"invalid type name {name!r}", "expected a class name like \"socket\" or \"Outer.Inner\"")
        if not isinstance(body, dict):
            raise self.error(path, f"got {_type_name(body)}", "expected a table with methods/getters/construct")
        for key in body:
            if key not in _TYPE_KEYS:
                raise self.error(path + (key,), "unknown type directive", _suggest(key, _TYPE_KEYS, "directive"))
        lists = {key: self.name_list(path, key, body.get(key, []), dotted=False) for key in _TYPE_LISTS}
        self.exclusive(path, lists)
        construct = body.get("construct", True)
        if not isinstance(construct, bool):
            raise self.error(path + ("construct",), f"got {_type_name(construct)}", "expected true or false")
        callback = self.callback(path, body.get("callback", {}))
        summarise = self.callback(path, body.get("summarise", {}), key="summarise")
        when = self.when(path, body["when"]) if "when" in body else None
        return TypeConfig(name=name, construct=construct, callback=callback, when=when,
                          summarise=summarise, **lists)

    def name_list(self, path: tuple, key: str, value: Any, *, dotted: bool) -> tuple[str, ...]:
        path = path + (key,)
        if not isinstance(value, list):
            raise self.error(path, f"got {_type_name(value)}", 'expected an array of names like ["a", "b"]')
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(path + (i,), f"got {_type_name(item)}", "expected a string")
            ok = _valid_dotted(item) if dotted else _valid_identifier(item)
            if not ok:
                raise self.error(
                    path + (i,),
                    f"invalid name {item!r}",
                    "expected a dotted Python name" if dotted else "expected a Python identifier",
                )
            if item in seen:
                raise self.error(path + (i,), f"{item!r} is listed twice", "expected each name once")
            seen.add(item)
        return tuple(value)

    def exclusive(self, path: tuple, roles: Mapping[str, tuple[str, ...]]) -> None:
        """A name has one role: a function is not both proxied and disabled,
        a type not both passed by value and bound.  (proxy and types may
        share a name: a factory such as ``select.poll`` returns instances of
        a type with the same name; and a type table with ``construct =
        false`` may name an immutable type: a value type whose class methods
        read the outside world, ``datetime.now``.)"""
        owner: dict[str, list[str]] = {}
        keys = [k for k in roles if k in _EXCLUSIVE_ROLES or k in _TYPE_LISTS]
        for key in keys:
            for i, name in enumerate(roles[key]):
                clash = [k for k in owner.get(name, ()) if frozenset((k, key)) not in _COMPATIBLE_ROLES]
                if clash:
                    where = path + ((key, name) if key == "types" else (key, i))
                    raise self.error(
                        where,
                        f"{name!r} is also in {clash[0]}",
                        f"expected each name in only one of {', '.join(keys)}",
                    )
                owner.setdefault(name, []).append(key)

    def callback(self, path: tuple, table: Any, key: str = "callback") -> Mapping:
        """Function/method name -> argument positions or keyword names that
        carry callables.  The function need not be in proxy: registering a
        handler (signal.signal) is not itself a boundary call, but the
        handler's later invocations are recorded as CALLBACK events."""
        path = path + (key,)
        if not isinstance(table, dict):
            raise self.error(path, f"got {_type_name(table)}", 'expected a table like { "signal" = [1] }')
        out = {}
        for fn, indexes in table.items():
            fpath = path + (fn,)
            if not _valid_identifier(fn):
                raise self.error(fpath, f"invalid function name {fn!r}", "expected a Python identifier")
            if not isinstance(indexes, list) or not indexes:
                raise self.error(
                    fpath, f"got {_type_name(indexes)}" if not isinstance(indexes, list) else "empty array",
                    "expected a non-empty array of argument positions (int) or keyword names (str)",
                )
            seen = set()
            for i, item in enumerate(indexes):
                if isinstance(item, bool) or not isinstance(item, (int, str)):
                    raise self.error(
                        fpath + (i,), f"got {_type_name(item)}",
                        "expected an argument position (int >= 0) or a keyword name (str)",
                    )
                if isinstance(item, int) and item < 0:
                    raise self.error(fpath + (i,), f"negative position {item}", "expected an int >= 0")
                if isinstance(item, str) and not _valid_identifier(item):
                    raise self.error(fpath + (i,), f"invalid keyword name {item!r}", "expected a Python identifier")
                if item in seen:
                    raise self.error(fpath + (i,), f"{item!r} is listed twice", "expected each argument once")
                seen.add(item)
            out[fn] = tuple(indexes)
        return MappingProxyType(out)

    def when(self, path: tuple, table: Any) -> When:
        path = path + ("when",)
        if not isinstance(table, dict):
            raise self.error(path, f"got {_type_name(table)}", 'expected a table like { python = ">=3.12" }')
        for key in table:
            if key not in _WHEN_KEYS:
                raise self.error(path + (key,), "unknown condition", _suggest(key, _WHEN_KEYS, "condition"))
        python: tuple = ()
        if "python" in table:
            spec = table["python"]
            if not isinstance(spec, str):
                raise self.error(path + ("python",), f"got {_type_name(spec)}", 'expected a string like ">=3.12"')
            parsed = _parse_python_spec(spec)
            if parsed is None:
                raise self.error(
                    path + ("python",),
                    f"bad version spec {spec!r}",
                    "expected comma-separated clauses like '>=3.12' or '>=3.11, <3.13'",
                )
            python = parsed
        platforms: tuple[str, ...] = ()
        if "platform" in table:
            value = table["platform"]
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not items:
                raise self.error(
                    path + ("platform",), f"got {_type_name(value)}", 'expected a sys.platform name or array like ["linux", "darwin"]'
                )
            for i, item in enumerate(items):
                if not isinstance(item, str) or not item:
                    p = path + ("platform",) + ((i,) if not isinstance(value, str) else ())
                    raise self.error(p, f"got {_type_name(item)}", "expected a non-empty sys.platform string")
            platforms = tuple(items)
        return When(python=python, platform=platforms)


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------

_SYNTAX_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_SYNTAX_END = re.compile(r"\s*\(at end of document\)\s*$")


def parse_text(text: str, filename: str) -> ConfigFile:
    """Parse and validate one config's text; raise ConfigError on any problem."""
    tomllib = _tomllib()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _SYNTAX_POS.search(msg)
        if m is not None:
            line, detail = int(m.group(1)), f"{msg[: m.start()]} (column {m.group(2)})"
        else:
            line = text.count("\n") + (0 if text.endswith("\n") else 1)
            detail = _SYNTAX_END.sub(" (at end of file)", msg)
        detail = detail[:1].lower() + detail[1:]
        raise _config_error(filename, line, None, f"TOML syntax error: {detail}", "expected valid TOML (https://toml.io)") from None
    return _Validator(text, filename).file(doc)


def load_file(path: Union[str, os.PathLike, Any]) -> ConfigFile:
    """Read and validate one file (a path or an importlib Traversable)."""
    return _parse_bytes(*_read_file(path))


def _read_file(path) -> tuple[str, bytes]:
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
    try:
        if isinstance(path, (str, os.PathLike)):
            with open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except OSError as exc:
        raise _config_error(name, None, None, f"cannot read file ({exc.strerror or exc})", "expected a readable TOML file") from None
    return name, data


def _read_or_error(path) -> tuple[str, Any]:
    try:
        return _read_file(path)
    except ConfigError as exc:
        return os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path), exc


def _parse_bytes(name: str, data: bytes) -> ConfigFile:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _config_error(name, line, None, f"invalid UTF-8 at byte {exc.start}", "expected UTF-8 text") from None
    return parse_text(text, name)


# --------------------------------------------------------------------------
# Search path and merge
# --------------------------------------------------------------------------


def shipped_config_path() -> str | None:
    """`shipped_config_dir` as a str when it is a folder on a file system
    (what record and replay use at start: no pathlib), else None."""
    import retracesoftware

    for entry in getattr(retracesoftware, "__path__", ()):
        candidate = os.path.join(entry, "configs")
        if os.path.isdir(candidate):
            return candidate
    return None


def shipped_config_dir():
    """The ``configs/`` folder shipped inside the package (may be missing).

    ``retracesoftware.__path__`` is consulted first: run from the source
    checkout, ``retracesoftware/__init__.py`` redirects ``__path__`` to the
    installed copy, while ``importlib.resources.files`` would still answer
    with the checkout's folder (which holds no configs).  importlib.resources
    remains the fallback for packages not on a file system (zip imports).
    """
    import retracesoftware

    for entry in getattr(retracesoftware, "__path__", ()):
        candidate = _Path(entry) / "configs"
        if candidate.is_dir():
            return candidate
    try:
        import importlib.resources
        return importlib.resources.files("retracesoftware") / "configs"
    except (ModuleNotFoundError, TypeError):  # pragma: no cover
        return None


def default_search_path(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> list:
    """Directories in precedence order: ``$RETRACE_MODULES_PATH`` entries,
    ``./.retrace/modules``, the shipped ``retracesoftware/configs``.

    A directory named in ``$RETRACE_MODULES_PATH`` that does not exist is an
    error (a typo there would otherwise silently record the wrong boundary).
    """
    return [d if not isinstance(d, str) else _Path(d) for d in _default_dirs(environ, cwd)]


def _default_dirs(environ=None, cwd=None) -> list:
    """`default_search_path` with str paths (a Traversable for a package not
    on a file system): what `load_config` uses, without pathlib."""
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    dirs: list = []
    for entry in environ.get(ENV_VAR, "").split(os.pathsep):
        if not entry.strip():
            continue
        full = os.path.join(cwd, entry)
        if not os.path.isdir(full):
            raise _config_error(
                f"${ENV_VAR}", None, None, f"{entry!r} is not a directory",
                f"expected {os.pathsep!r}-separated directories of *.toml boundary configs",
            )
        dirs.append(full)
    dirs.append(os.path.join(cwd, USER_DIR))
    shipped = shipped_config_path()
    if shipped is None:
        shipped = shipped_config_dir()
    if shipped is not None:
        dirs.append(shipped)
    return dirs


def _config_files(directory) -> list:
    if isinstance(directory, (str, os.PathLike)):
        # (os.scandir, not pathlib: this runs at every start)
        directory = os.fspath(directory)
        try:
            with os.scandir(directory) as it:
                names = [e.name for e in it
                         if e.name.endswith(".toml") and not e.name.startswith(".") and e.is_file()]
        except OSError:
            return []
        return [os.path.join(directory, name) for name in sorted(names)]
    try:
        if not directory.is_dir():
            return []
        entries = list(directory.iterdir())
    except OSError:
        return []
    files = [
        e for e in entries
        if e.name.endswith(".toml") and not e.name.startswith(".") and e.is_file()
    ]
    return sorted(files, key=lambda e: e.name)


def _installed_lookup(installed: Mapping[str, str | None] | None):
    if installed is not None:
        table = {_normalise_distribution(k): v for k, v in installed.items()}
        return lambda name: table.get(_normalise_distribution(name))

    def lookup(name: str) -> str | None:
        import importlib.metadata  # lazily: costly to import, needed only for [requires]
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return lookup


def _resolve_module(module: ModuleConfig, python_version, platform) -> ModuleConfig | None:
    if module.when is not None and not module.when.matches(python_version, platform):
        return None
    types = {
        name: _replace(t, when=None)
        for name, t in module.types.items()
        if t.when is None or t.when.matches(python_version, platform)
    }
    return _replace(module, types=MappingProxyType(types), when=None)


def _normalised(modules: Mapping[str, ModuleConfig]) -> dict:
    def items(values):
        return sorted(values, key=lambda v: (isinstance(v, str), v if isinstance(v, str) else f"{v:020d}"))

    def callbacks(table):
        return {fn: items(ix) for fn, ix in sorted(table.items())}

    out = {}
    for name in sorted(modules):
        m = modules[name]
        out[name] = {
            **{key: sorted(getattr(m, key)) for key in _MODULE_LISTS},
            "callback": callbacks(m.callback),
            "types": {
                tname: {
                    "methods": sorted(t.methods),
                    "getters": sorted(t.getters),
                    "construct": t.construct,
                    "callback": callbacks(t.callback),
                    # (only when present: digests of configs without summaries are unchanged)
                    **({"summarise": callbacks(t.summarise)} if t.summarise else {}),
                }
                for tname, t in sorted(m.types.items())
            },
        }
        if m.summarise:
            out[name]["summarise"] = callbacks(m.summarise)
    return {"schema": SCHEMA_VERSION, "modules": out}


def config_digest(modules: Mapping[str, ModuleConfig]) -> str:
    """sha256 of the canonical JSON of the effective modules.  Independent of
    file names, file layout and list order; changes with any directive."""
    import json     # (a valid config cache computes no digest: not imported at start)
    blob = json.dumps(_normalised(modules), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _sha256(blob.encode("ascii")).hexdigest()


def build_config(
    layers: Iterable[Iterable[ConfigFile]],
    *,
    python_version=None,
    installed: Mapping[str, str | None] | None = None,
    platform: str | None = None,
    files: Sequence[str] = (),
) -> BoundaryConfig:
    """Merge parsed files, grouped by search directory (highest precedence
    first).  A module defined in a higher layer replaces every lower
    definition of it entirely; two active definitions in the same layer are
    an error."""
    pyver = _normalise_python_version(python_version)
    platform = sys.platform if platform is None else platform
    lookup = _installed_lookup(installed)
    modules: dict[str, ModuleConfig] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        this_layer: dict[str, tuple[ModuleConfig, str, int]] = {}
        for cfg in layer:
            if cfg.requires is not None:
                version = lookup(cfg.requires.distribution)
                if not cfg.requires.satisfied(version):
                    log.debug("%s: skipped, %s %s does not satisfy [requires]", cfg.path, cfg.requires.distribution, version)
                    continue
            for name, module in cfg.modules.items():
                resolved = _resolve_module(module, pyver, platform)
                if resolved is None:
                    log.debug("%s: modules.%s gated out by when", cfg.path, name)
                    continue
                line = cfg.lines.get(name, 1)
                if name in this_layer:
                    _, other_path, other_line = this_layer[name]
                    raise _config_error(
                        cfg.path, line, render_key_path(("modules", name)),
                        f"also defined in {other_path}:{other_line} (same directory)",
                        "expected one active definition per directory; gate alternatives with [requires] or when",
                    )
                this_layer[name] = (resolved, cfg.path, line)
        for name, (module, path, _) in this_layer.items():
            if name not in modules:  # first (highest-precedence) layer wins
                modules[name] = module
                sources[name] = path
    ordered = {name: modules[name] for name in sorted(modules)}
    return BoundaryConfig(
        modules=MappingProxyType(ordered),
        sources=MappingProxyType({name: sources[name] for name in ordered}),
        digest=config_digest(ordered),
        files=tuple(files),
    )


def _load_config(
    search_path: Sequence | None = None,
    *,
    python_version=None,
    installed: Mapping[str, str | None] | None = None,
    platform: str | None = None,
) -> BoundaryConfig:
    """Load the effective boundary config.

    search_path: directories, highest precedence first (default
    :func:`default_search_path`); missing directories are skipped.
    python_version: tuple or "3.12.1" (default: this interpreter).
    installed: distribution -> version mapping replacing the
    importlib.metadata lookup (absent = not installed), for tests and tools.
    platform: a sys.platform value (default: this one).
    """
    default = search_path is None and python_version is None and installed is None and platform is None
    dirs = _default_dirs() if search_path is None else list(search_path)
    found = [[_read_or_error(entry) for entry in _config_files(directory)] for directory in dirs]
    unreadable = any(isinstance(data, ConfigError) for files in found for _, data in files)
    key = _cache_key(dirs, found) if default and not unreadable else None
    if key is not None:
        cached = _cache_load(key)
        if cached is not None:
            return cached
    layers = []
    read: list[str] = []
    for files in found:
        parsed = []
        for name, data in files:
            if isinstance(data, ConfigError):
                raise data      # in file order, as if read here
            cfg = _parse_bytes(name, data)
            parsed.append(cfg)
            read.append(cfg.path)
        layers.append(parsed)
    config = build_config(layers, python_version=python_version, installed=installed, platform=platform, files=read)
    # A [requires] gate depends on what is installed, which the key does not
    # cover: such configs are not cached.
    if key is not None and not any(cfg.requires is not None for layer in layers for cfg in layer):
        _cache_store(key, config)
    return config


# --------------------------------------------------------------------------
# The compiled-config cache
# --------------------------------------------------------------------------
#
# load_config() with its defaults runs at every record and replay start;
# parsing and validating the TOML files was most of its cost. The effective
# BoundaryConfig is kept marshalled (plain dicts, lists and str: marshal's
# format is this interpreter's, whose version is in the key; importing json
# cost ~1.5-3 ms of every start) in the user's cache directory, in a file
# named by a key over everything the result depends on: every config
# file's path and bytes in search order, this interpreter's version
# and platform, SCHEMA_VERSION and the loader's own source files (size
# and mtime). A cache file is
# used only when its key and its checksum match; the digest it holds is the
# one computed when it was written (the same function of the same files), so
# recordings' preambles do not change. RETRACE_CONFIG_CACHE=DIR puts it
# elsewhere; RETRACE_CONFIG_CACHE=0 turns it off. The checksum catches a
# damaged file, not a crafted one: like __pycache__, the directory is
# trusted as the user's own (marshal is not hardened against crafted data).

CACHE_ENV = "RETRACE_CONFIG_CACHE"
_CACHE_FORMAT = 2     # 2: marshal payloads (.bin), not JSON: no json import at start
_TUPLES = {"ModuleConfig": ("proxy", "disable", "bind", "immutable", "patch_hash"),
           "TypeConfig": ("methods", "getters")}
_MAPS = ("callback", "summarise")


def _cache_dir() -> str | None:
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip() in ("", "0", "off", "no") else value
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "retracesoftware")


def _code_digest() -> bytes:
    """The loader's own code, by size and modification time (as .pyc files
    are checked): a changed loader never reads an old compiled form."""
    here = os.path.dirname(os.path.abspath(__file__))
    marks = []
    for name in ("config.py", "config_versions.py", "toml_key_lines.py"):
        try:
            st = os.stat(os.path.join(here, name))
            marks.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            marks.append((name, None, None))
    return repr(marks).encode()


def _cache_key(dirs, found) -> str | None:
    if _cache_dir() is None:
        return None
    h = _sha256()
    h.update(repr((_CACHE_FORMAT, SCHEMA_VERSION, sys.version, sys.platform, sys.implementation.name)).encode())
    h.update(_code_digest())
    for files in found:     # a directory without configs changes nothing: not in the key
        h.update(b"\0dir\0")
        for name, data in files:
            h.update(b"\0file\0" + os.fsencode(name) + b"\0" + str(len(data)).encode() + b"\0")
            h.update(data)
    return h.hexdigest()


def _encode_entry(obj) -> dict | None:
    kind = type(obj).__name__
    names = {f.name for f in _fields(obj)}
    known = {"name", "when", "callback", "summarise", *_TUPLES[kind],
             *(("types",) if kind == "ModuleConfig" else ("construct",))}
    if names != known or obj.when is not None:
        return None     # a field this encoder does not know: do not cache
    out: dict = {"name": obj.name}
    for key in _TUPLES[kind]:
        out[key] = list(getattr(obj, key))
    for key in _MAPS:
        out[key] = {fn: list(ix) for fn, ix in getattr(obj, key).items()}
    if kind == "ModuleConfig":
        types = {}
        for tname, t in obj.types.items():
            types[tname] = _encode_entry(t)
            if types[tname] is None:
                return None
        out["types"] = types
    else:
        out["construct"] = obj.construct
    return out


def _mapping(table: dict) -> Mapping:
    return MappingProxyType({fn: tuple(ix) for fn, ix in table.items()}) if table else _EMPTY


def _decode_type(d: dict) -> TypeConfig:
    return TypeConfig(name=d["name"], methods=tuple(d["methods"]), getters=tuple(d["getters"]),
                      construct=d["construct"], callback=_mapping(d["callback"]), when=None,
                      summarise=_mapping(d["summarise"]))


def _decode_module(d: dict) -> ModuleConfig:
    return ModuleConfig(name=d["name"], **{k: tuple(d[k]) for k in _TUPLES["ModuleConfig"]},
                        callback=_mapping(d["callback"]),
                        types=MappingProxyType({n: _decode_type(t) for n, t in d["types"].items()}),
                        when=None, summarise=_mapping(d["summarise"]))


def _cache_store(key: str, config: BoundaryConfig) -> None:
    modules = {}
    for name, module in config.modules.items():
        modules[name] = _encode_entry(module)
        if modules[name] is None:
            return
    payload = marshal.dumps({"modules": modules, "sources": dict(config.sources), "digest": config.digest,
                             "files": list(config.files)})
    _cache_write(f"config-{key[:32]}.bin", key, payload)


def _load_toml_cached(path) -> dict:
    """A TOML file of ours read at every start (configs/handlers/boundary.toml),
    parsed once: the parsed document is kept as JSON under the sha256 of the
    file's bytes (and this interpreter's version) in the same cache directory."""
    with (open(path, "rb") if isinstance(path, (str, os.PathLike)) else path.open("rb")) as f:
        data = f.read()
    directory = _cache_dir()
    key = None
    if directory is not None:
        key = _sha256(repr((_CACHE_FORMAT, sys.version)).encode() + b"\0" + data).hexdigest()
        payload = _cache_read(f"toml-{key[:32]}.bin", key)
        if payload is not None:
            try:
                doc = marshal.loads(payload)
                if type(doc) is dict:
                    return doc
            except (ValueError, EOFError, TypeError):
                pass
    doc = _tomllib().loads(data.decode("utf-8"))
    if key is not None:
        try:
            payload = marshal.dumps(doc)     # (ValueError on a date: not cached)
            if marshal.loads(payload) == doc:
                _cache_write(f"toml-{key[:32]}.bin", key, payload)
        except (TypeError, ValueError, EOFError):
            pass
    return doc


def _cache_write(filename: str, key: str, payload: bytes) -> None:
    text = f"{key}\n{_sha256(payload).hexdigest()}\n".encode() + payload
    try:
        directory = _cache_dir()
        os.makedirs(directory, exist_ok=True)
        final = os.path.join(directory, filename)
        tmp = f"{final}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, final)
        _cache_prune(directory, filename.split("-", 1)[0] + "-")
    except (OSError, TypeError):
        pass    # a cache we cannot write only costs the next start its parse


def _cache_prune(directory: str, prefix: str, keep: int = 8) -> None:
    """Keep the newest *keep* cache files of one kind (config files differ by
    project when a project has its own .retrace/modules)."""
    entries = []
    for name in os.listdir(directory):
        if name.startswith(prefix) and name.endswith((".bin", ".json")):   # (.json: cache format 1)
            try:
                entries.append((os.stat(os.path.join(directory, name)).st_mtime, name))
            except OSError:
                pass
    for _, name in sorted(entries)[:-keep]:
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _cache_read(filename: str, key: str) -> bytes | None:
    """The payload of a cache file whose key and checksum match, else None."""
    try:
        with open(os.path.join(_cache_dir(), filename), "rb") as f:
            text = f.read()
    except (OSError, ValueError, TypeError):
        return None
    stored_key, _, rest = text.partition(b"\n")
    check, _, payload = rest.partition(b"\n")
    if stored_key != key.encode() or _sha256(payload).hexdigest().encode() != check:
        return None
    return payload


def _cache_load(key: str) -> BoundaryConfig | None:
    payload = _cache_read(f"config-{key[:32]}.bin", key)
    if payload is None:
        return None
    try:
        data = marshal.loads(payload)
        modules = {name: _decode_module(m) for name, m in data["modules"].items()}
        return BoundaryConfig(modules=MappingProxyType(modules), sources=MappingProxyType(dict(data["sources"])),
                              digest=data["digest"], files=tuple(data["files"]))
    except (ValueError, KeyError, TypeError, AttributeError, EOFError):
        return None


#: modules imported only to compile a cache (below), kept alive: ours use them
_PRIVATE_MODULES: list = []


class _PrivateImports:
    """Modules a cold cache imports to parse TOML (tomllib, json, typing,
    string…), which a warm start never loads, are taken out of
    ``sys.modules`` again and kept alive here. The modules a program starts
    with must not depend on the cache: a recording made cold would start
    with modules its warm replay imports only later, after the
    identity-hash switch, whose objects then hash differently (a trio
    program's replay diverged). Ours stay."""

    def __enter__(self):
        self.before = set(sys.modules)

    def __exit__(self, *exc):
        for name in [n for n in sys.modules if n not in self.before]:
            if name != "retracesoftware" and not name.startswith("retracesoftware."):
                _PRIVATE_MODULES.append(sys.modules.pop(name))
        return False


def load_config(search_path=None, *, python_version=None, installed=None, platform=None) -> BoundaryConfig:
    with _PrivateImports():
        return _load_config(search_path, python_version=python_version, installed=installed, platform=platform)


load_config.__doc__ = _load_config.__doc__


def load_toml_cached(path) -> dict:
    with _PrivateImports():
        return _load_toml_cached(path)


load_toml_cached.__doc__ = _load_toml_cached.__doc__
