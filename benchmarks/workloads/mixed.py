"""N mixed calls: time.time, time.perf_counter, random.random, random.randint,
os.urandom, uuid.uuid4 in rotation; prints a digest of every value seen."""
import hashlib
import os
import random
import sys
import time
import uuid

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
digest = hashlib.sha256()
calls = (
    time.time,
    time.perf_counter,
    random.random,
    lambda: random.randint(0, 1 << 30),
    lambda: os.urandom(8),
    uuid.uuid4,
)
k = len(calls)
for i in range(n):
    digest.update(repr(calls[i % k]()).encode())
print(f"{n} calls, digest {digest.hexdigest()}")
