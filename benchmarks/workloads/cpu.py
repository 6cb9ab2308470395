"""CPU-bound pure Python with a few clock calls.

A seed taken from the clock drives an integer-heavy workload (a sieve, a
small n-body-style float loop and string building), so the printed result
differs on every plain run; the clock is read only a handful of times.
"""
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
started = time.time()
seed = time.time_ns() % 1000 + 1

# Sieve of primes below n, then a checksum mixed with the seed.
flags = bytearray([1]) * n
flags[0:2] = b"\x00\x00"
for i in range(2, int(n ** 0.5) + 1):
    if flags[i]:
        flags[i * i::i] = bytes(len(range(i * i, n, i)))
checksum = 0
for p in range(n):
    if flags[p]:
        checksum = (checksum * 31 + p * seed) % 1_000_000_007
mid = time.time()

# A float loop: a damped oscillator integrated n steps.
x, v, dt = float(seed), 0.0, 1e-3
for _ in range(n):
    a = -x - 0.01 * v
    v += a * dt
    x += v * dt

# String building and a dict.
words = {}
for i in range(n // 10):
    key = format((i * seed) % 9973, "x")
    words[key] = words.get(key, 0) + 1
finished = time.time()
print(f"seed {seed} checksum {checksum} x {x:.12f} keys {len(words)}")
print(f"phases {mid - started:.6f} {finished - mid:.6f}")
