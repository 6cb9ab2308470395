"""4 threads x N lock-protected increments; every 1000th increment appends
(thread name, counter) to a shared list under a second lock. The order of the
appends depends on the scheduler, so the printed digest differs between plain
runs."""
import hashlib
import sys
import threading

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
counter = 0
counter_lock = threading.Lock()
log = []
log_lock = threading.Lock()


def work():
    global counter
    name = threading.current_thread().name
    for i in range(n):
        with counter_lock:
            counter += 1
            value = counter
        if i % 1000 == 0:
            with log_lock:
                log.append((name, value))


threads = [threading.Thread(target=work, name=f"w{i}") for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
digest = hashlib.sha256(repr(log).encode()).hexdigest()
print(f"counter {counter}, {len(log)} appends, order digest {digest}")
print("first appends", log[:8])
