"""Baseline: start, read the clock once, print, exit.

Its record/replay cost is the fixed price of starting retrace (imports,
preamble, source hashes, installing the boundary); the runner subtracts it
when it reports the net cost per recorded time.time() call.
"""
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
print(f"started at {time.time()!r}, n={n}")
