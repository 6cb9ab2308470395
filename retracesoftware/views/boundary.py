"""``python -m retracesoftware boundary``: the effective boundary, in one listing.

Every module config in force for this interpreter (configs/*.toml, then
.retrace/modules/ and $RETRACE_MODULES_PATH overrides), each recorded
function, type, method and value with its special handling where plain
recording is not enough (configs/handlers/boundary.toml), the areas realised
in Python and the C libraries that cannot be recorded. Answers "is X
recorded, and how?" without reading the installer.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m retracesoftware boundary",
                                     description="print the effective boundary (what is recorded, and how)")
    parser.add_argument("--grep", metavar="TEXT", help="only the lines containing TEXT (and their module)")
    parser.add_argument("--json", action="store_true", help="the special cases and areas as JSON")
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from retracesoftware.install import boundary
    from retracesoftware.install.config import load_config
    config = load_config()
    if args.json:
        out = {
            "config_digest": config.digest,
            "modules": {name: config.sources.get(name) for name in sorted(config.modules)},
            "substitutes": {".".join(k): v.ref for k, v in boundary.SUBSTITUTES.items()},
            "hidden_types": {".".join(k): v.ref for k, v in boundary.HIDDEN_TYPES.items()},
            "inert_after_replay": sorted(".".join(k) for k in boundary.INERT_AFTER_REPLAY),
            "instance_callbacks": {".".join(k): list(v) for k, v in boundary.INSTANCE_CALLBACKS.items()},
            "function_adapters": {".".join(k): {"sibling": s, "handler": f.ref}
                                  for k, (s, f) in boundary.FUNCTION_ADAPTERS.items()},
            "method_adapters": {f"{m}.{t}.{name}": {"sibling": s, "handler": f.ref}
                                for (m, t), methods in boundary.METHOD_ADAPTERS.items()
                                for name, (s, f) in methods.items()},
            "areas": dict(boundary.AREAS),
            "native_io": {k: {"distribution": d, "what": w, "entry_points": list(e)}
                          for k, (d, w, e) in boundary.NATIVE_IO.items()},
        }
        sys.stdout.write(json.dumps(out, indent=2, sort_keys=True) + "\n")
        return 0
    lines = boundary.describe(config.modules)
    if args.grep:
        kept, header = [], None
        for line in lines:
            if line and not line.startswith(" "):
                header = line
            if args.grep in line:
                if header is not None and header != line and (not kept or kept[-1] != header):
                    kept.append(header)
                kept.append(line)
        lines = kept
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
