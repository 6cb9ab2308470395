"""The layer rule, checked on the installed package's source (docs/ARCHITECTURE.md).

Layers, lowest first: ``functional`` < ``utils`` < ``stream`` | ``proxy`` <
``install`` < the top (``retracesoftware`` itself: CLI, views, debugger).
``stream`` and ``proxy`` are side by side: neither imports the other (the
install layer joins them). A layer may import only from layers below it, and
uses only their public names: no underscore name crosses a layer, and none
is imported from a sibling module that is not itself private (``_x.py``).

Every import counts, at module level or inside a function. The few known
exceptions are listed in ``ALLOWED`` with the reason each is there; an entry
that no longer matches anything fails too, so the list only shrinks.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import retracesoftware.functional  # noqa: F401  (the installed tree, below)

PACKAGE = Path(retracesoftware.functional.__file__).resolve().parent.parent
LAYERS = {"functional": 0, "utils": 1, "stream": 2, "proxy": 2, "install": 3}
TOP = 4

# (rule, importing module, what it uses) -> why it is allowed
ALLOWED = {
    # The pytest plugin (an entry point, so it lives in install) runs a whole CLI
    # session per test run: it is top-layer code that the plugin loads lazily.
    ("upward", "retracesoftware.install.pytest_session", "retracesoftware.preamble"): "pytest plugin runs CLI sessions",
    ("upward", "retracesoftware.install.pytest_session", "retracesoftware.record_replay"): "pytest plugin runs CLI sessions",
    ("upward", "retracesoftware.install.pytest_session", "retracesoftware.children"): "pytest plugin runs CLI sessions",
    ("upward", "retracesoftware.install.pytest_session", "retracesoftware.runner"): "pytest plugin runs CLI sessions",
}


def layer_of(module: str):
    parts = module.split(".")
    if parts[0] != "retracesoftware":
        return None
    if len(parts) == 1:
        return "root"
    return parts[1] if parts[1] in LAYERS else "top"


def rank(layer: str) -> int:
    return LAYERS.get(layer, TOP)


def modules():
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return out


MODULES = modules()


def is_module(name: str) -> bool:
    return name in MODULES


def imports(module: str, tree: ast.AST):
    """(lineno, imported module, imported name or None, local alias)."""
    package = module if tree_is_package(module) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, None, a.asname or a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                if is_module(full):
                    yield node.lineno, full, None, a.asname or a.name
                else:
                    yield node.lineno, base, a.name, a.asname or a.name


def tree_is_package(module: str) -> bool:
    return (PACKAGE.parent / Path(*module.split(".")) / "__init__.py").exists()


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def violations():
    found = []
    # private names each layer defines on its classes/instances (self._x = ..., def _x in a class)
    attr_layers: dict[str, set] = {}
    for module, tree in MODULES.items():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for node in ast.walk(cls):
                name = None
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = node.name
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                        and isinstance(node.value, ast.Name) and node.value.id == "self":
                    name = node.attr
                if name and private(name):
                    attr_layers.setdefault(name, set()).add(layer_of(module))

    for module, tree in MODULES.items():
        here = layer_of(module)
        aliases = {}  # local name -> retracesoftware module it is bound to
        foreign = set()  # local names bound to modules outside the package
        for lineno, target, name, alias in imports(module, tree):
            there = layer_of(target)
            if there is None:
                if name is None:
                    foreign.add(alias)
                continue
            if there != "root" and here != "root" and there != here:
                if rank(there) > rank(here) or rank(there) == rank(here):
                    found.append(("upward", module, target, lineno))
            if here == "proxy" and there == "stream":
                found.append(("proxy-imports-stream", module, target, lineno))
            if name is None:
                aliases[alias] = target
            elif private(name):
                own = target.rpartition(".")[2]
                if there != here:
                    found.append(("private-across-layers", module, f"{target}.{name}", lineno))
                elif target != module and not private(own) and target != module.rpartition(".")[0]:
                    found.append(("private-from-sibling", module, f"{target}.{name}", lineno))
        for node in tree.body:   # private copies of outside modules (utils/isolate.py)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                    and getattr(node.value.func, "id", None) == "isolate_module":
                foreign.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and private(node.attr)):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in aliases:
                target = aliases[value.id]
                if layer_of(target) not in (here, "root"):
                    found.append(("private-across-layers", module, f"{target}.{node.attr}", node.lineno))
                continue
            if isinstance(value, ast.Name) and (value.id in foreign or value.id in ("self", "cls")):
                continue
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "__import__":
                continue   # __import__("posix")._exit: a module outside the package
            owners = attr_layers.get(node.attr, set())
            if owners and here not in owners and here not in ("root",):
                found.append(("private-across-layers", module, f".{node.attr} (of {'/'.join(sorted(owners))})",
                              node.lineno))
    return found


def check(rule):
    found = [v for v in violations() if v[0] == rule]
    bad = [f"{m}:{line}: {what}" for r, m, what, line in found if (r, m, what) not in ALLOWED]
    assert not bad, f"{rule}:\n  " + "\n  ".join(bad)


def test_no_upward_import():
    check("upward")


def test_proxy_does_not_import_stream():
    check("proxy-imports-stream")


def test_no_private_name_crosses_a_layer():
    check("private-across-layers")


def test_no_private_name_imported_from_a_public_sibling():
    check("private-from-sibling")


def test_the_runtime_does_not_import_its_test_double():
    """proxy/memory.py (MemoryWriter/MemoryReader) is the proxy's test double:
    the System works against the Writer/Reader protocols, never imports it."""
    bad = [f"{m}:{line}" for m, tree in MODULES.items() if m.startswith("retracesoftware.proxy.")
           and m not in ("retracesoftware.proxy.memory",)
           for line, target, _, _ in imports(m, tree) if target == "retracesoftware.proxy.memory"]
    assert not bad, bad


def test_every_allowed_exception_is_still_needed():
    seen = {(r, m, what) for r, m, what, _ in violations()}
    stale = [k for k in ALLOWED if k not in seen]
    assert not stale, f"remove from ALLOWED: {stale}"


def test_the_rule_catches_what_it_should(tmp_path):
    """The checker itself can fail: a made-up module breaking each rule is found."""
    global MODULES
    saved = MODULES
    try:
        MODULES = dict(saved)
        MODULES["retracesoftware.utils.bad"] = ast.parse(
            "from retracesoftware.install import installer\n"
            "from retracesoftware.functional._backend import _private\n"
            "def f(s):\n    return s._sequencer\n")
        MODULES["retracesoftware.proxy.bad"] = ast.parse("import retracesoftware.stream\n")
        rules = {(r, m) for r, m, *_ in violations()}
    finally:
        MODULES = saved
    assert ("upward", "retracesoftware.utils.bad") in rules
    assert ("private-across-layers", "retracesoftware.utils.bad") in rules
    assert ("proxy-imports-stream", "retracesoftware.proxy.bad") in rules


def test_functional_imports_no_other_layer():
    """`import retracesoftware.functional` loads neither utils nor any layer above
    (the package's __init__ stays light: the error classes load on first use)."""
    code = ("import sys, retracesoftware.functional, retracesoftware\n"
            "print(sorted(m for m in sys.modules if m.startswith('retracesoftware.')"
            " and not m.startswith('retracesoftware.functional')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONSAFEPATH": "1"}, cwd=str(PACKAGE.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
