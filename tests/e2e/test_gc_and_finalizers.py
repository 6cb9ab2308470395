"""Garbage collection happens at other points on replay (our runtime
allocates too): what runs because of it must not put events on the tape."""
from retrace_testing import assert_faithful


def test_gc_callback_making_a_boundary_call(scenario):
    # (hypothesis times every collection with time.perf_counter)
    s = scenario("""
import gc, time, os, random
seen = []
def timer(phase, info):
    seen.append(time.perf_counter())
gc.callbacks.append(timer)
class Node:
    def __init__(self):
        self.me = self
for i in range(30):
    for _ in range(400):
        Node()
    os.getpid()
gc.collect()
print("collections seen:", len(seen) > 0, random.random())
gc.callbacks.remove(timer)
""")
    assert_faithful(s, replays=2)


def test_unclosed_socket_finalized(scenario):
    # Its ResourceWarning formats repr(sock), which calls sock.fileno().
    s = scenario("""
import socket, os, random, gc
def leak():
    a, b = socket.socketpair()
    a.sendall(b"x")
    return b.recv(1)
for _ in range(3):
    print(leak(), random.random())
    os.getpid()
gc.collect()
print("ok")
""")
    assert_faithful(s, replays=2, env={"PYTHONWARNINGS": "default"})
