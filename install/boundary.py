"""The boundary's special cases, read from configs/handlers/boundary.toml.

The module configs (configs/*.toml, install/config.py) declare what is
recorded; this file's tables declare what plain recording does not realise,
each entry naming its handler ("package.module:attribute", imported on first
use). The installer takes its tables from here; `describe()` joins them with
the module configs in force for ``python -m retracesoftware boundary``.
"""
from __future__ import annotations

import importlib
import os
from types import MappingProxyType

__all__ = ["SUBSTITUTES", "HIDDEN_TYPES", "INERT_AFTER_REPLAY", "INSTANCE_CALLBACKS",
           "FUNCTION_ADAPTERS", "METHOD_ADAPTERS",
           "AREAS", "NATIVE_IO", "handler", "describe", "INDEX_FILE"]


def _index_file():
    from retracesoftware.install.config import shipped_config_path, shipped_config_dir
    base = shipped_config_path()      # a str path: no pathlib at start
    if base is not None:
        return os.path.join(base, "handlers", "boundary.toml")
    base = shipped_config_dir()
    return None if base is None else base / "handlers" / "boundary.toml"


def _load() -> dict:
    path = _index_file()
    if path is None:   # pragma: no cover - a package without its configs
        return {}
    from retracesoftware.install.config import load_toml_cached
    return load_toml_cached(path)


def _split(dotted: str, parts: int) -> tuple:
    """"a.b.c" -> ("a.b", "c") for parts=2; module names may hold dots, the
    last parts - 1 names do not."""
    pieces = dotted.rsplit(".", parts - 1)
    return tuple(pieces)


INDEX_FILE = _index_file()
_INDEX = _load()


def handler(ref: str):
    """The object named by *ref*: "package.module:attribute" or "package.module"."""
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


class _Lazy:
    """A handler resolved on first call (the installer imports this module
    at start-up; the handlers' modules load only when needed)."""

    __slots__ = ("ref", "_fn")

    def __init__(self, ref):
        self.ref = ref
        self._fn = None

    def __call__(self, *args, **kwargs):
        fn = self._fn
        if fn is None:
            fn = self._fn = handler(self.ref)
        return fn(*args, **kwargs)

    def __repr__(self):
        return f"<handler {self.ref}>"


#: (module, function) -> factory(system, name) of a Python substitute.
SUBSTITUTES = MappingProxyType({_split(k, 2): _Lazy(v) for k, v in _INDEX.get("substitutes", {}).items()})
#: (module, type name) -> maker() of a type the module does not expose.
HIDDEN_TYPES = MappingProxyType({_split(k, 2): _Lazy(v) for k, v in _INDEX.get("hidden_types", {}).items()})
#: (module, function) pairs inert once a replay ended.
INERT_AFTER_REPLAY = frozenset(_split(k, 2) for k in _INDEX.get("inert_after_replay", {}).get("functions", ()))
#: (module, type, method) -> the callback methods of the instances external code makes.
INSTANCE_CALLBACKS = MappingProxyType({_split(k, 3): tuple(v)
                                       for k, v in _INDEX.get("instance_callbacks", {}).items()})
#: (module, function) -> (bytes-returning sibling, adapter factory): buffer-filling calls.
FUNCTION_ADAPTERS = MappingProxyType({_split(k, 2): (v["sibling"], _Lazy(v["handler"]))
                                      for k, v in _INDEX.get("function_adapters", {}).items()})
#: (module, type) -> {method: (bytes-returning sibling, adapter factory)}.
METHOD_ADAPTERS: dict = {}
for _key, _value in _INDEX.get("method_adapters", {}).items():
    _m, _t, _f = _split(_key, 3)
    METHOD_ADAPTERS.setdefault((_m, _t), {})[_f] = (_value["sibling"], _Lazy(_value["handler"]))
METHOD_ADAPTERS = MappingProxyType(METHOD_ADAPTERS)
#: area -> {"handler", "patches", "how", "cli_only"?}: what is realised in Python.
AREAS = MappingProxyType(dict(_INDEX.get("areas", {})))
#: module -> (distribution, what it does, entry points): C code doing its own I/O.
NATIVE_IO = MappingProxyType({k: (v["distribution"], v["what"], tuple(v["entry_points"]))
                              for k, v in _INDEX.get("native_io", {}).items()})


# ------------------------------------------------------------ the hidden types
def scandir_iterator_type():
    import os
    it = os.scandir(".")
    try:
        return type(it)
    finally:
        it.close()


def poll_type():
    import select
    return type(select.poll())


# ------------------------------------------------------------ the listing
def describe(modules) -> list[str]:
    """The effective boundary as text lines: every module config in force
    (*modules*: name -> ModuleConfig) with the special cases above marked
    where they apply, then the areas realised in Python and the C libraries
    that cannot be recorded."""
    special = {}
    for (m, f), ref in SUBSTITUTES.items():
        special.setdefault(f"{m}.{f}", []).append(f"substitute {ref.ref}")
    for (m, t), ref in HIDDEN_TYPES.items():
        special.setdefault(f"{m}.{t}", []).append(f"hidden type {ref.ref}")
    for m, f in INERT_AFTER_REPLAY:
        special.setdefault(f"{m}.{f}", []).append("inert after replay")
    for (m, t, f), methods in INSTANCE_CALLBACKS.items():
        special.setdefault(f"{m}.{t}.{f}", []).append(f"instance callbacks {', '.join(methods)}")
    for (m, f), (sibling, ref) in FUNCTION_ADAPTERS.items():
        special.setdefault(f"{m}.{f}", []).append(f"adapter via {sibling} ({ref.ref})")
    for (m, t), methods in METHOD_ADAPTERS.items():
        for f, (sibling, ref) in methods.items():
            special.setdefault(f"{m}.{t}.{f}", []).append(f"adapter via {sibling} ({ref.ref})")

    def note(name):
        return f"  [{'; '.join(special[name])}]" if name in special else ""

    lines = ["# modules (configs/*.toml; special cases from configs/handlers/boundary.toml)"]
    for name in sorted(modules):
        m = modules[name]
        lines.append(f"{name}")
        for fname in sorted(m.proxy):
            cb = f"  callback {list(m.callback[fname])}" if fname in m.callback else ""
            lines.append(f"  recorded  {name}.{fname}{cb}{note(f'{name}.{fname}')}")
        for label, names in (("disabled", m.disable), ("bound", m.bind), ("by value", m.immutable),
                             ("hash", m.patch_hash)):
            lines.extend(f"  {label:<8}  {name}.{n}" for n in sorted(names))
        for tname, t in sorted(m.types.items()):
            lines.append(f"  type      {name}.{tname}{note(f'{name}.{tname}')}")
            for meth in sorted(t.methods):
                cb = f"  callback {list(t.callback[meth])}" if meth in t.callback else ""
                lines.append(f"    method  {meth}{cb}{note(f'{name}.{tname}.{meth}')}")
            for getter in sorted(t.getters):
                lines.append(f"    getter  {getter}")
    lines.append("")
    lines.append("# areas realised in Python (configs/handlers/boundary.toml [areas])")
    for area, info in sorted(AREAS.items()):
        scope = " (CLI sessions)" if info.get("cli_only") else ""
        lines.append(f"{area}{scope}: {info['handler']}")
        lines.append(f"  patches   {', '.join(info.get('patches', ()))}")
        lines.append(f"  how       {info.get('how', '')}")
    lines.append("")
    lines.append("# not recordable: C code doing its own I/O ([native_io]; warned on record, refused on replay)")
    for module, (dist, what, entries) in sorted(NATIVE_IO.items()):
        lines.append(f"{module} ({dist}): {what}; entry points {', '.join(entries)}")
    return lines
