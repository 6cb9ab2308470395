"""A flaky program: its output is different on every plain run.

    python -m retracesoftware --recording /tmp/flaky.bin -- python examples/flaky.py
    python -m retracesoftware --recording /tmp/flaky.bin      # prints the same again
"""
import os
import random
import time
import uuid

started = time.time()
order_id = uuid.uuid4()
token = os.urandom(4).hex()
dice = [random.randint(1, 6) for _ in range(5)]

print(f"order {order_id} token {token}")
print(f"dice {dice} total {sum(dice)}")
if sum(dice) > 20:
    print("jackpot: the bug only happens on lucky runs")
print(f"took {time.time() - started:.9f}s, pid {os.getpid()}")
