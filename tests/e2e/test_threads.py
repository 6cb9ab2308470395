"""Threads replay faithfully (DESIGN §4, issue 9).

Each scenario's output depends on thread scheduling (checked: among up to
PLAIN_TRIES plain runs, one prints something else than the first), is
recorded through the CLI, and replayed 5 times with byte-identical stdout. Programs set a tiny switch interval so the interpreter switches
threads inside the loops (switch-heavy code), which makes the interleaving
vary from run to run.
"""
import re
import time

import pytest

from retrace_testing import assert_faithful

REPLAYS = 5

PRELUDE = """
import sys, threading
sys.setswitchinterval(1e-6)
start_gate = threading.Event()    # workers start together
def spin(n=200):
    x = 0
    for i in range(n):
        x += i
    return x
"""


PLAIN_TRIES = 6


def assert_scheduling_dependent(s):
    """The scenario's output depends on scheduling: some plain run prints
    something else than the first. On a loaded machine two runs in a row
    may interleave alike, so up to PLAIN_TRIES runs are compared (a
    scenario whose output never varies fails)."""
    first = s.plain()
    assert first.returncode == 0, first.err
    for _ in range(PLAIN_TRIES - 1):
        if s.plain().stdout != first.stdout:
            return
    raise AssertionError(
        f"{PLAIN_TRIES} plain runs printed the same output, so this scenario cannot "
        "detect an unfaithful replay:\n" + first.out + first.err)


def check(scenario, body):
    s = scenario(PRELUDE + body)
    assert_scheduling_dependent(s)
    return assert_faithful(s, replays=REPLAYS, check_plain_differs=False)


def test_lock_order_of_appends(scenario):
    check(scenario, """
lock = threading.Lock()
out = []
def work(k):
    start_gate.wait()
    for i in range(300):
        with lock:
            out.append(k)
        spin(20)
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts: t.start()
start_gate.set()
for t in ts: t.join()
print("".join(map(str, out)))
""")


def test_lock_acquire_release_and_try_acquire(scenario):
    check(scenario, """
lock = threading.Lock()
out_lock = threading.Lock()   # every append is ordered by a lock
got = []
def note(x):
    with out_lock:
        got.append(x)
def work(k):
    start_gate.wait()
    for i in range(300):
        if lock.acquire(blocking=False):
            note(k)
            spin(5)
            lock.release()
        else:
            note("-")
        lock.acquire(); note(k); lock.release()
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts: t.start()
start_gate.set()
for t in ts: t.join()
print("".join(map(str, got)))
""")


def test_rlock_nested(scenario):
    check(scenario, """
import time
lock = threading.RLock()
go = threading.Event()
out = []
def inner(k):
    with lock:
        out.append(k)
def work(k):
    go.wait()
    for i in range(200):
        with lock:
            inner(k)
            spin(10)
            inner(k)
        spin(10)
        if i % 16 == 1:
            # let the others run: on an idle machine the first thread woken
            # could finish before the others woke (six plain runs alike)
            time.sleep(0.0001)
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts: t.start()
go.set()
for t in ts: t.join()
print("".join(map(str, out)))
""")


def test_condition_producer_consumers(scenario):
    check(scenario, """
cond = threading.Condition()
items, got = [], []
done = False
def consumer(k):
    while True:
        with cond:
            while not items and not done:
                cond.wait()
            if not items:
                return
            got.append((k, items.pop(0)))
def producer():
    global done
    for i in range(300):
        with cond:
            items.append(i)
            cond.notify()
        spin(30)
    with cond:
        done = True
        cond.notify_all()
ts = [threading.Thread(target=consumer, args=(k,)) for k in range(3)]
for t in ts: t.start()
p = threading.Thread(target=producer); p.start(); p.join()
for t in ts: t.join()
print(got)
""")


def test_semaphore_and_bounded_semaphore(scenario):
    check(scenario, """
sem = threading.Semaphore(2)
bsem = threading.BoundedSemaphore(1)
go = threading.Event()
out_lock = threading.Lock()   # two threads may be inside sem at once
out = []
def work(k):
    go.wait()
    for i in range(100):
        with sem:
            with out_lock:
                out.append(k)
            spin(10)
        with bsem:
            with out_lock:
                out.append(k + 4)
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts: t.start()
go.set()
for t in ts: t.join()
print("".join(map(str, out)))
""")


def test_event(scenario):
    check(scenario, """
lock = threading.Lock()
out = []
go = [threading.Event() for _ in range(50)]
def work(k):
    for e in go:
        e.wait()
        with lock:
            out.append(k)
        spin(10 * k)
        with lock:
            out.append(k)
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts: t.start()
for e in go:
    spin(100)
    e.set()
for t in ts: t.join()
print("".join(map(str, out)), go[0].is_set())
""")


def test_barrier(scenario):
    check(scenario, """
barrier = threading.Barrier(4)
lock = threading.Lock()
out = []
def work(k):
    for r in range(60):
        spin(30)
        i = barrier.wait()
        with lock:
            out.append((k, i))
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print(out)
""")


def test_timer(scenario):
    check(scenario, """
lock = threading.Lock()
out = []
def fire(k):
    for step in range(3):
        spin(20 * (k % 4) + 10)
        with lock:
            out.append(k)
for rnd in range(10):
    # Equal delays: which timer thread appends first is up to the scheduler.
    timers = [threading.Timer(0.0005, fire, args=(k,)) for k in range(6)]
    for t in timers: t.start()
    timers[5].cancel()
    for t in timers: t.join()
print(out)
""")


def test_queue_queue(scenario):
    check(scenario, """
import queue
q = queue.Queue(maxsize=3)
lock = threading.Lock()
got = []
def producer(k):
    for i in range(80):
        q.put((k, i))
def consumer(k):
    while True:
        item = q.get()
        if item is None:
            return
        with lock:
            got.append((k, item))
cs = [threading.Thread(target=consumer, args=(k,)) for k in range(2)]
ps = [threading.Thread(target=producer, args=(k,)) for k in range(3)]
for t in cs + ps: t.start()
for t in ps: t.join()
for t in cs: q.put(None)
for t in cs: t.join()
print(got, q.empty())
""")


def test_simple_queue(scenario):
    check(scenario, """
import queue
q = queue.SimpleQueue()
got = []
lock = threading.Lock()
def producer(k):
    start_gate.wait()
    for i in range(150):
        q.put((k, i))
        spin(5)
def consumer(k):
    while True:
        item = q.get()
        if item is None:
            return
        with lock:
            got.append((k, item))
cs = [threading.Thread(target=consumer, args=(k,)) for k in range(2)]
ps = [threading.Thread(target=producer, args=(k,)) for k in range(3)]
for t in cs + ps: t.start()
start_gate.set()
for t in ps: t.join()
for t in cs: q.put(None)
for t in cs: t.join()
print(got, q.qsize(), q.empty())
""")


def test_thread_pool_executor(scenario):
    check(scenario, """
from concurrent.futures import ThreadPoolExecutor
lock = threading.Lock()
order = []
go = threading.Event()
def task(k):
    go.wait()
    spin(300 + 50 * (k % 7))
    with lock:
        order.append(k)
    return k * k
done = []
def finished(f):
    with lock:
        done.append(f.result())
with ThreadPoolExecutor(max_workers=4) as pool:
    futures = [pool.submit(task, k) for k in range(60)]
    for f in futures:
        f.add_done_callback(finished)
    go.set()
    results = [f.result() for f in futures]
print(order)
print(done)
print(sorted(threading.current_thread().name for _ in range(1)))
""")


@pytest.mark.skipif(__import__("retracesoftware.utils", fromlist=["BACKEND"]).BACKEND != "cpp",
                    reason="as_completed iterates a set of futures: its order replays only with "
                           "identity hashing (C++ backend)")
def test_futures_wait_and_as_completed(scenario):
    # wait() and as_completed() take the futures' locks in id() order; the
    # replay (whose addresses differ) must take them in the recorded order.
    check(scenario, """
from concurrent.futures import ThreadPoolExecutor, as_completed, wait, FIRST_COMPLETED
def task(k):
    spin(200 + 97 * (k % 5))
    return k
with ThreadPoolExecutor(max_workers=3) as pool:
    futures = [pool.submit(task, k) for k in range(12)]
    print([f.result() for f in as_completed(futures)])
    more = [pool.submit(task, k) for k in range(12)]
    first, rest = wait(more, return_when=FIRST_COMPLETED)
    print(len(first) >= 1, sorted(f.result() for f in first | rest))
    print([f.result() for f in as_completed(more)])
""")


def test_daemon_threads_alive_at_exit(scenario):
    check(scenario, """
lock = threading.Lock()
counts = [0, 0]
forever = threading.Event()
def busy(k):
    while True:
        with lock:
            counts[k] += 1
def idle():
    forever.wait()
for k in range(2):
    threading.Thread(target=busy, args=(k,), daemon=True).start()
threading.Thread(target=idle, daemon=True).start()
for i in range(200):
    spin(50)
with lock:
    print(counts)
""")


def test_threads_started_from_threads(scenario):
    check(scenario, """
lock = threading.Lock()
out = []
def leaf(name):
    for i in range(50):
        with lock:
            out.append(name)
        spin(20)
def parent(k):
    start_gate.wait()
    kids = [threading.Thread(target=leaf, args=(f"{k}{c}",)) for c in "ab"]
    for t in kids: t.start()
    leaf(str(k))
    for t in kids: t.join()
ts = [threading.Thread(target=parent, args=(k,)) for k in range(3)]
for t in ts: t.start()
start_gate.set()
for t in ts: t.join()
print(" ".join(out))
print(sorted(t.name for t in threading.enumerate()))
""")


def test_idents_native_ids_and_names_as_recorded(scenario):
    # Idents and native ids differ between runs by themselves: the replay
    # must show the recorded ones.
    check(scenario, """
import _thread
seen = []
lock = threading.Lock()
def work():
    me = threading.current_thread()
    with lock:
        seen.append((me.name, me.ident, me.native_id, threading.get_ident(),
                     threading.get_native_id(), me is threading.current_thread()))
ts = [threading.Thread(target=work, name=f"w{k}") for k in range(3)]
for t in ts: t.start()
for t in ts: t.join()
done = threading.Event()
raw = _thread.start_new_thread(lambda: (seen.append(("raw", threading.get_ident())), done.set()), ())
done.wait()
print(seen, raw)
print([(t.name, t.ident, t.native_id) for t in ts])
main = threading.main_thread()
print(main.name, main.ident, main.native_id, threading.get_ident() == main.ident,
      threading.current_thread() is main)
""")


def test_asyncio_run_in_executor_and_call_soon_threadsafe(scenario):
    check(scenario, """
import asyncio
lock = threading.Lock()
go = threading.Event()
order = []
def blocking(k):
    go.wait()
    spin(2000 + 300 * (k % 5))
    with lock:
        order.append(k)
    return k
async def main():
    loop = asyncio.get_running_loop()
    got = []
    def from_thread(k):
        go.wait()
        for i in range(20):
            spin(100)
            loop.call_soon_threadsafe(got.append, (k, i))
    ts = [threading.Thread(target=from_thread, args=(k,)) for k in range(3)]
    for t in ts: t.start()
    futs = [loop.run_in_executor(None, blocking, k) for k in range(12)]
    go.set()
    results = [await f for f in asyncio.as_completed(futs)]
    for t in ts: t.join()
    while len(got) < 60:
        await asyncio.sleep(0)
    return results, got
print(asyncio.run(main()), order)
""")


def test_replay_that_cannot_proceed_is_reported_in_bounded_time(scenario):
    """The program is changed after recording so that a worker waits for a
    lock acquire the recording never gives it while the main thread waits
    for the worker: a divergence naming threads, not a hang."""
    s = scenario(PRELUDE + """
import os
lock = threading.Lock()
def work():
    with lock:
        pass
t = threading.Thread(target=work)
t.start(); t.join()
print("done")
""")
    rec = s.record()
    assert rec.returncode == 0, rec.err
    s.script.write_text(s.script.read_text().replace(
        "t.start(); t.join()", "with lock:\n    t.start(); t.join()"))
    start = time.monotonic()
    rep = s.replay("--force", "--thread-timeout", "1")
    elapsed = time.monotonic() - start
    assert rep.returncode == 3, rep.err
    assert "replay diverged" in rep.err and "thread" in rep.err, rep.err
    assert elapsed < 60, elapsed


def test_changed_program_taking_another_lock_is_reported_naming_both(scenario):
    """SYNC events carry the lock's id: a changed program that takes lock
    `a` where the recording took lock `b` diverges at that acquire, naming
    both locks and the line, instead of replaying with lock states astray."""
    s = scenario(PRELUDE + """
a = threading.Lock()
b = threading.Lock()
out = []
def work():
    for i in range(3):
        with a:
            out.append(i)
t = threading.Thread(target=work)
t.start()
with b:
    out.append("main")
t.join()
print(sorted(map(str, out)))
""")
    rec = s.record()
    assert rec.returncode == 0, rec.err
    lines = s.script.read_text().splitlines()
    line = lines.index("with b:") + 1
    s.script.write_text(s.script.read_text().replace("with b:", "with a:"))
    rep = s.replay("--force", "--thread-timeout", "5")
    assert rep.returncode == 3, rep.err
    assert "replay diverged" in rep.err, rep.err
    found = re.search(r"expected an acquire of lock #(\d+) \(made (\d+)\w\w in app\.py:<module> by thread 0\), "
                      r"got lock\.acquire of lock #(\d+) \(made (\d+)\w\w in app\.py:<module> by thread 0\)",
                      rep.err)
    assert found, rep.err
    assert found[1] != found[3] and int(found[2]) == int(found[4]) + 1, rep.err   # b was made right after a
    assert f"app.py:{line})" in rep.err, rep.err


def test_join_timeout_and_is_alive_as_recorded(scenario):
    # How far a thread got when another one asked (join(timeout), is_alive())
    # depends on scheduling; the replay must answer as recorded, and a
    # multiprocessing Pool used as a context manager (terminate() polls its
    # handler threads' is_alive()) must replay.
    check(scenario, """
import multiprocessing as mp, random
def work(n):
    spin(n)
answers = []
for rnd in range(20):
    t = threading.Thread(target=work, args=(3000 + 100 * (rnd % 7),))
    t.start()
    t.join(0.0005)
    answers.append(int(t.is_alive()))
    t.join()
    answers.append(int(t.is_alive()))
print("".join(map(str, answers)))
def sq(x):
    return x * x, random.random()
if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        print(sorted(pool.map(sq, range(4))))
""")
