"""N calls to time.time() (the runner reports ns added per recorded call)."""
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
now = time.time
total = 0.0
for _ in range(n):
    total += now()
print(f"{n} calls, sum {total!r}, last {now()!r}")
