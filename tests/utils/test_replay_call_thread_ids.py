"""ReplayCallGateway asks its thread_id() callable once per thread until
utils.thread_ids_changed() (the C++ backend caches it per OS thread; the
Python one asks every call): a thread whose id changes replays its own
events as soon as the change is announced, a new thread is asked at once,
and a new callable is never answered from another's cache."""
import threading
import time

import pytest

from retrace_testing import load_backend


@pytest.fixture
def layers(backend):
    return load_backend("utils", backend), load_backend("stream", backend)


def _tape(stream, fingerprint, path, calls):
    """calls: (thread id, value) per recorded time.time() call."""
    cur = [None]
    w = stream.StreamWriter(path, {}, thread_id=lambda: cur[0], compress=False)
    fp = fingerprint()
    for tid, value in calls:
        cur[0] = tid
        w.write("CALL", "time.time", fp, "RESULT", value)
    w.close()
    return stream.StreamReader(path)


def _gateway(u, reader, thread_id, slow_calls):
    gate = u.Gate()
    gate.phase = u.INTERNAL
    turn = u.TurnState()

    def slow(*a):
        slow_calls.append(a)
        return "slow"
    g = u.ReplayCallGateway(gate, time.time, reader.take_call, thread_id, turn, "CALL", "time.time",
                            "RESULT", "ERROR", slow, lambda: None)
    return g, gate


def test_a_changed_id_is_seen_after_thread_ids_changed(layers, tmp_path):
    u, stream = layers
    ids = {threading.get_ident(): 0}
    asked = []

    def current():
        asked.append(1)
        return ids[threading.get_ident()]
    r = _tape(stream, u.fingerprint, tmp_path / "t.bin", [(0, 1.0), (0, 2.0), (7, 3.0), ("1", 4.0)])
    slow = []
    g, gate = _gateway(u, r, current, slow)
    assert g() == 1.0
    assert g() == 2.0
    if u.__name__.endswith("_utils"):
        assert len(asked) == 1                  # once for this thread, not per call
    ids[threading.get_ident()] = 7              # a fork's child renumbers its thread, for example
    u.thread_ids_changed()
    assert g() == 3.0
    got = []

    def child():
        ids[threading.get_ident()] = "1"
        gate.phase = u.INTERNAL                 # the phase is per thread
        got.append(g())
    t = threading.Thread(target=child)
    t.start()
    t.join()
    assert got == [4.0]
    assert slow == []


def test_another_callable_is_asked_even_in_the_same_epoch(layers, tmp_path):
    u, stream = layers
    path = tmp_path / "t.bin"
    _tape(stream, u.fingerprint, path, [(0, 1.0), (5, 2.0)]).close()
    r = stream.StreamReader(path)
    slow = []
    assert _gateway(u, r, lambda: 0, slow)[0]() == 1.0
    assert _gateway(u, r, lambda: 5, slow)[0]() == 2.0
    assert slow == []
