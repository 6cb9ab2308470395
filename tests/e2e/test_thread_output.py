"""Output written by several threads without a lock replays in the order it
was written (install/output.py, docs/THREADS.md "Output of several threads").

On record the real write and its event are one step (our runtime's lock);
on replay a thread's real write happens before any other thread takes its
next event. Before this, each write matched its own event but the bytes on
stdout came out in another order, exit 0 (the first test failed in 10 of 10
runs on the old code, 5 per backend; the --schedule one in 8 of 10).
"""
import os

import pytest

from retrace_testing import assert_faithful

RECORDINGS = 3

# Every print is four writes (name, " ", number, "\n") from four threads,
# with a tiny switch interval: lines interleave differently on every run.
# The short sleeps let the others run (on an idle machine the first thread
# woken could print all its lines before the others had woken up, four
# plain runs alike).
UNLOCKED_PRINTS = """
    import os, sys, threading, time
    sys.setswitchinterval(1e-6)
    go = threading.Event()

    def worker(name):
        go.wait()
        for i in range(25):
            if i % 4 == 1:
                time.sleep(0.0001)
            print(name, i)
            if i % 5 == 0:
                sys.stdout.write(name + "!")
            if i % 8 == 0:
                sys.stdout.flush()
                os.write(1, name.encode() + b"#\\n")

    threads = [threading.Thread(target=worker, args=(c,)) for c in "abcd"]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    print("done")
"""


def test_unlocked_prints_of_several_threads_replay_in_their_order(scenario):
    s = scenario(UNLOCKED_PRINTS)
    for i in range(RECORDINGS):
        # The first call also shows plain runs print different orders.
        rec = assert_faithful(s, replays=2, check_plain_differs=(i == 0))
        assert rec.returncode == 0 and rec.stdout.endswith(b"done\n"), rec.err


@pytest.mark.xfail(os.environ.get("RETRACE_BACKEND") == "python", strict=False,
                   reason="Python backend --schedule recordings of this program diverge (exit 3, "
                   "'expected thread N to run 333 more instructions ... got its next event after M'), "
                   "before and after the output fix: the record counts differ (utils/_ticker.py)")
def test_unlocked_prints_replay_in_their_order_with_schedule(scenario):
    s = scenario(UNLOCKED_PRINTS)
    rec = s.record(options=("--schedule",))
    assert rec.returncode == 0 and "retrace: error" not in rec.err, rec.err
    for _ in range(2):
        rep = s.replay()
        assert rep.returncode == 0, rep.err
        assert rep.stdout == rec.stdout, (rec.out, rep.out)


# A collection due at an output write runs before it (install/gc_points.py);
# a gc callback that sleeps lets the other threads print during it. Their
# writes come before the collecting thread's on the tape: the replay must
# not make them wait for it. Before: the replay hung (the collecting thread
# waited for the end of its collection, the others for its write). The
# workers sleep at random points: without, the others printed all their
# lines during the first collection's sleep and four plain runs printed the
# same lines (CI, 3.13 cpp; a loaded machine).
PRINTS_DURING_A_COLLECTION = """
    import gc, random, threading, time
    gc.set_threshold(100)

    def slow(phase, info):
        if phase == "start":
            time.sleep(random.choice((0.0005, 0.001, 0.002, 0.003)))

    gc.callbacks.append(slow)
    keep = []

    def worker(name):
        for i in range(40):
            keep.append([[] for _ in range(30)])
            print(name, i)
            if random.random() < 0.2:
                time.sleep(0.0002)

    threads = [threading.Thread(target=worker, args=(c,)) for c in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.callbacks.remove(slow)
    print("done")
"""


def test_other_threads_print_during_a_collection_at_an_output_write(scenario):
    s = scenario(PRINTS_DURING_A_COLLECTION)
    rec = assert_faithful(s, replays=2)
    assert rec.stdout.endswith(b"done\n"), rec.err
