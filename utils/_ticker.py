"""Per-thread instruction counters for ``--schedule`` recordings: the Python
fallback of ``utils/cpp/ticker.cpp`` (same contract, same counts: both count
the ``opcode`` events of frames of program code).

``ScheduleTracer(mode, gate, want, thread_id, tag, write=None, bind=None,
on_block=None, on_new=None)``:

- installed in a thread by ``current()`` (which returns that thread's
  `Ticker`), or by calling the tracer as a ``sys.settrace`` function
  (``threading.settrace(tracer)``: new threads install it first thing);
- ``want(code)`` (cached per code object) is 1 for code to count, 0 for
  code not to count, 2 for the import system's entry (``_find_and_load``:
  nothing is counted until it returns); a frame is counted when its code's
  ``want`` is 1, the gate's phase is INTERNAL as it starts and the thread is
  not inside an import; each of its opcode events adds one to the thread's
  ``count``;
- record: ``write(*values)`` / ``bind(obj)`` write the switch to the calling
  thread first (``tag prev_tid prev_count``, in the same write as the values)
  when another thread ran last; a counted instruction does the same;
- replay: a counted instruction of a thread that is not ``may_run``, or whose
  ``count == stop``, calls ``on_block(ticker, False)`` first (hand over, wait
  for the turn); a return from a counted frame at ``count == stop`` calls
  ``on_block(ticker, True)`` (hand over only);
- ``active`` (all of it on/off), ``enforce`` (replay: waiting on/off),
  ``uninstall()`` (calling thread).

Check-and-write is made atomic by a lock (a writer may let another thread
run in the middle of a write: a Python one anywhere, the native one while it
waits for its buffer lock); the C++ version has the same lock. ``waiting``:
how many threads wait for that lock (tests). Unlike the C tracer, this one
may also let another thread run after its switch, before the instruction:
`_tick` checks again (see there).
"""
from __future__ import annotations

import _thread
import sys

_get_ident = _thread.get_ident
_settrace = sys.settrace
_gettrace = sys.gettrace
_getframe = sys._getframe
_INTERNAL = 1
_pause = _thread.allocate_lock()
_pause.acquire()                      # never released: acquire(timeout) is a GIL-free pause


def _ask_for_opcode_events():
    # PYVERSIONS: 3.12+ delivers opcode events to a tracer only when some
    # frame asked for them before settrace (interp->f_opcode_trace_set, set
    # for good). Done once, here (import time, before any tracing): turning
    # it back off on a live frame in a thread crashed 3.12.1.
    _getframe().f_trace_opcodes = True


_ask_for_opcode_events()


class Ticker:
    __slots__ = ("tracer", "tid", "count", "stop", "may_run", "_local")

    def __init__(self, tracer, tid):
        self.tracer = tracer
        self.tid = tid
        self.count = 0
        self.stop = -1
        self.may_run = False


class ScheduleTracer:
    def __init__(self, mode, gate, want, thread_id, tag, write=None, bind=None, on_block=None, on_new=None):
        if mode not in ("record", "replay"):
            raise ValueError(f"mode must be 'record' or 'replay', got {mode!r}")
        self.replay = mode == "replay"
        if not self.replay and not (callable(write) and callable(bind)):
            raise TypeError("a recording ScheduleTracer needs write= and bind= callables")
        if self.replay and not callable(on_block):
            raise TypeError("a replaying ScheduleTracer needs an on_block= callable")
        self.gate, self.want, self.thread_id, self.tag = gate, want, thread_id, tag
        self._write, self._bind, self.on_block, self.on_new = write, bind, on_block, on_new
        self.active = True
        self.enforce = True
        self.chaos = 0                # record: mean instructions between forced switches
        self._countdown = 0
        import random
        self._rng = random.Random(int.from_bytes(__import__("os").urandom(8), "little"))
        self._cache = {}
        # The thread's Ticker, in thread-local storage: an OS ident is reused
        # by a later thread once its thread ended.
        self._tls = _thread._local()
        self._importing = {}
        self._last = None
        self._lock = _thread.RLock()
        self.waiting = 0              # threads waiting for _lock (see _enter)
        self._global = self._make_global()

    # -- per thread ------------------------------------------------------
    def current(self):
        t = getattr(self._tls, "ticker", None)
        if t is not None and _gettrace() is self._global:
            return t
        if t is None:
            t = Ticker(self, self.thread_id())
            if self.on_new is not None:
                self.on_new(t)
            self._tls.ticker = t
        _settrace(self._global)
        return t

    def uninstall(self):
        if _gettrace() is self._global:
            _settrace(None)

    def __call__(self, frame, event, arg):
        self.current()
        return self._global(frame, event, arg)

    def _make_global(self):
        tracer = self
        cache = self._cache
        gate = self.gate
        tls = self._tls

        def local(frame, event, arg):
            if event == "opcode":
                if tracer.active:
                    tracer._tick(tls.ticker)
            elif event == "return":
                if tracer.active and tracer.replay and tracer.enforce:
                    t = tls.ticker
                    if t.count == t.stop:
                        tracer.on_block(t, True)
            return local

        importing = self._importing     # OS ident -> depth of import-system frames

        def leave_import(frame, event, arg):
            if event == "return":
                ident = _get_ident()
                importing[ident] = importing.get(ident, 1) - 1
            return leave_import

        def global_trace(frame, event, arg):
            if event != "call" or not tracer.active:
                return None
            code = frame.f_code
            want = cache.get(code)
            if want is None:
                want = cache[code] = int(tracer.want(code))
            if want == 2:
                # An import: what runs inside depends on what was imported
                # before (our runtime imports differ on record and replay).
                ident = _get_ident()
                importing[ident] = importing.get(ident, 0) + 1
                frame.f_trace_lines = False
                return leave_import
            if want != 1 or gate.phase != _INTERNAL or importing.get(_get_ident()):
                return None
            # PYVERSIONS: 3.13 turns opcode events on (per code object) only
            # when f_trace_opcodes is set on a frame that has f_trace: set
            # first, or the first frame of each code object would run
            # without them (see ticker.cpp count_opcodes).
            frame.f_trace = local
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
            return local
        return global_trace

    def _tick(self, t):
        if self.replay:
            if self.enforce and (not t.may_run or t.count == t.stop):
                self.on_block(t, False)
            t.count += 1
            return
        if self.chaos > 0:
            self._countdown -= 1
            if self._countdown <= 0:
                # --chaos: let another thread run here (before this instruction)
                self._countdown = self._rng.randint(1, 2 * self.chaos)
                _pause.acquire(True, 0.00002)
        # This thread must still be the one that ran last when its
        # instruction runs. The switch below is Python code: the eval loop
        # may let another thread run at any call or function entry in it
        # (the lock's __exit__, the gate's setter) after the switch was
        # written. That thread then wrote its own switch, naming this one
        # at the count before this instruction, and the instruction ran in
        # its turn (a replay runs it after that thread's instructions: an
        # unlocked read-modify-write replayed differently). So the check is
        # made again after each switch, and from the last check to the
        # return there is no call (nothing lets another thread run).
        while self._last is not t:
            self._take_turn(t)
        t.count += 1

    def _take_turn(self, t):
        gate = self.gate
        previous = gate.phase
        gate.phase = 0
        try:
            self._enter()
            try:
                self._switch_to(t, ())
            finally:
                self._lock.release()
        finally:
            gate.phase = previous

    def _enter(self):
        """Take the record lock; `waiting` counts the threads waiting for it
        (tests: a thread stopped at its switch while another writes)."""
        lock = self._lock
        if not lock.acquire(False):
            self.waiting += 1
            try:
                lock.acquire()
            finally:
                self.waiting -= 1

    def _switch_to(self, t, values):
        """Record (lock held): *t* runs now; returns whether it wrote *values*."""
        prev = self._last
        if prev is t:
            return False
        self._last = t
        if prev is None:
            return False
        self._write(self.tag, prev.tid, prev.count, *values)
        return True

    def after_fork(self):
        """In a forked child only the forking thread survives: a lock
        another thread held at the fork would never be released."""
        self._lock = _thread.RLock()
        self.waiting = 0

    # -- record ------------------------------------------------------------
    # The writer runs with the gate DISABLED: a Python writer's own frames
    # (msgpack's) are not the program's and must not be counted.
    def write(self, *values):
        gate = self.gate
        previous = gate.phase
        gate.phase = 0
        try:
            if self.active and not self.replay:
                t = self.current()
                self._enter()
                try:
                    if self._switch_to(t, values):
                        return None
                    return self._write(*values)
                finally:
                    self._lock.release()
            return self._write(*values)
        finally:
            gate.phase = previous

    def bind(self, obj):
        gate = self.gate
        previous = gate.phase
        gate.phase = 0
        try:
            if self.active and not self.replay:
                t = self.current()
                self._enter()
                try:
                    self._switch_to(t, ())
                    return self._bind(obj)
                finally:
                    self._lock.release()
            return self._bind(obj)
        finally:
            gate.phase = previous
