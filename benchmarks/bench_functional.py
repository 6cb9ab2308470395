"""Cost of functional's combinators relative to calling the composed functions
directly. A plain script: prints a table of ns/call and ratios, asserts nothing.

    python benchmarks/bench_functional.py [--quick]

Target (issue 3): C++ ``compose``/``partial`` cost <= 1.3x a direct call of the
composed function(s). Baselines: "inline" is the same work written inline
(``f(g(x))``, ``f(1, x)``), the strictest; "closure" is the Python function
one would write instead of the combinator (``lambda x: f(g(x))``);
"functools" is ``functools.partial``. The ratio is (time per call via the
combinator) / (time per baseline call), each the best of several timeit
repeats; loop overhead (~6 ns) is included in both.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import operator
import sys
import timeit


def add1(x):
    return x + 1


def twice(x):
    return x * 2


def add(a, b):
    return a + b


def scenarios(F):
    """(name, direct statement, combinator statement, namespace).

    Two baselines per combinator: the work written inline (``inline``) and the
    closure one would write without this library (``closure``/``functools``).
    """
    closure = {
        "cb": lambda x: abs(operator.neg(x)),
        "cp": lambda x: add1(twice(x)),
        "cp3": lambda x: add1(twice(add1(x))),
        "pb": lambda x: operator.add(1, x),
        "pp": lambda x: add(1, x),
        "pk": lambda x: add(x, b=1),
    }
    cb, cp, cp3, pb, pp, pk = (closure[k] for k in ("cb", "cp", "cp3", "pb", "pp", "pk"))
    rows = []
    for label, inline, closure_fn, combinator, ns in [
        ("compose(builtin, builtin)", "f(g(x))", cb, F.compose(abs, operator.neg), {"f": abs, "g": operator.neg}),
        ("compose(py, py)", "f(g(x))", cp, F.compose(add1, twice), {"f": add1, "g": twice}),
        ("compose(py, py, py)", "f(g(h(x)))", cp3, F.compose(add1, twice, add1),
         {"f": add1, "g": twice, "h": add1}),
        ("partial(builtin, 1)", "f(1, x)", pb, F.partial(operator.add, 1), {"f": operator.add}),
        ("partial(py, 1)", "f(1, x)", pp, F.partial(add, 1), {"f": add}),
        ("partial(py, b=1)", "f(x, b=1)", pk, F.partial(add, b=1), {"f": add}),
    ]:
        ns = dict(ns, x=5, c=combinator, h_closure=closure_fn)
        rows.append((label, "inline", inline, "c(x)", ns))
        rows.append((label, "closure", "h_closure(x)", "c(x)", ns))
    rows.append(("partial(builtin, 1)", "functools", "fp(x)", "c(x)",
                 {"x": 5, "fp": functools.partial(operator.add, 1), "c": F.partial(operator.add, 1)}))
    return rows


def best_ns(stmt, namespace, number, repeat):
    timer = timeit.Timer(stmt, globals=namespace)
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    args = parser.parse_args(argv)
    number, repeat = (20_000, 3) if args.quick else (1_000_000, 7)

    backends = []
    for name, module in (("cpp", "retracesoftware.functional._functional"),
                         ("python", "retracesoftware.functional._python")):
        try:
            backends.append((name, importlib.import_module(module)))
        except ImportError as exc:
            print(f"{name}: unavailable ({exc})")

    print(f"Python {sys.version.split()[0]}, {number} calls x best of {repeat}")
    print(f"{'backend':8} {'scenario':27} {'baseline':9} {'base ns':>8} {'comb. ns':>9} {'ratio':>7}  target")
    worst = {}
    for backend, F in backends:
        for name, baseline, direct, combined, ns in scenarios(F):
            assert eval(direct, ns) == eval(combined, ns), name  # same work, same answer
            d = best_ns(direct, ns, number, repeat)
            c = best_ns(combined, ns, number, repeat)
            ratio = c / d
            target = "-"
            if backend == "cpp":
                target = "<=1.3x " + ("ok" if ratio <= 1.3 else "MISSED")
            worst[(backend, baseline)] = max(worst.get((backend, baseline), 0.0), ratio)
            print(f"{backend:8} {name:27} {baseline:9} {d:8.1f} {c:9.1f} {ratio:6.2f}x  {target}")
    for (backend, baseline), ratio in worst.items():
        print(f"worst ratio ({backend} vs {baseline}): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
