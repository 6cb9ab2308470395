"""``--schedule`` recordings: thread switches in pure Python replay exactly
(docs/THREADS.md "Recorded thread switches", docs/EVENTS.md ``PREEMPT``).

Record: every thread of the program counts the instructions of program code
it runs (``utils.ScheduleTracer``: a C trace function, or ``sys.settrace``
with the Python backend). Whenever a thread other than the one that ran last
counts an instruction or writes an event, it first writes
``PREEMPT prev_thread prev_count``: the previous thread stopped after
``prev_count`` instructions (counted from its start). Each event of the tape
is thus written by the thread that "holds the turn", and every change of
that thread is on the tape.

Replay: one thread runs program code at a time, the *runner*. When the tape's
head leaves the runner it is a ``PREEMPT runner count``: it is read at once
and the runner runs on until its counter reaches ``count`` (at an opcode, a
return of a counted frame, or when it asks for its next event), then hands
the turn to the thread that wrote the PREEMPT. A thread that reaches an
instruction without the turn waits (GIL released) on the sequencer's
condition, so the deadlock watchdog covers it. The native fast path of the
replay (``ReplayCallGateway`` / ``take_call``) is off in such replays: every
event is taken through ``System.take_turn``.

The mode is stored in the preamble (``options.schedule``): a replay needs no
flag.
"""
from __future__ import annotations

import os
import sys
import threading as _threading

from retracesoftware import utils
from retracesoftware.proxy.protocol import at_end, event_index

PREEMPT = "PREEMPT"

_NONE = object()
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(utils.__file__))) + os.sep
_THREADING = getattr(_threading, "__file__", None)


def _want(code) -> int:
    """1: count this code's instructions: program code and the libraries it
    runs; 0: not our runtime, ``threading`` (its start-up and join paths are
    patched differently on record and replay) or the frozen import system;
    2: the import system's entry — nothing is counted inside an import (a
    module our runtime imported on record but not on replay, or the other
    way round, runs its body on one side only)."""
    name = code.co_filename
    if name.startswith("<frozen importlib") and code.co_name == "_find_and_load":
        return 2
    want = int(not (name.startswith(_PACKAGE) or name == _THREADING or name.startswith("<frozen ")))
    if _DEBUG and want:
        _dbg(f"SCHED count {name}:{code.co_firstlineno} {code.co_name}\n".encode())
    return want


_DEBUG = bool(os.environ.get("RETRACE_DEBUG_SCHEDULE"))


def _dbg(data):
    from retracesoftware.install.isolation import real_os     # the unpatched os.write
    real_os.write(2, data)


def tracer_class():
    """The C tracer when the utils and stream layers are both native; else
    the Python one. Both hold their own lock across a switch check and its
    write (any writer may release the GIL inside a write)."""
    from retracesoftware import stream
    native = getattr(utils, "NativeScheduleTracer", None)
    if native is not None and utils.BACKEND == "cpp" and stream.BACKEND == "cpp":
        return native
    from retracesoftware.utils._ticker import ScheduleTracer
    return ScheduleTracer


#: --chaos: mean number of counted instructions between forced switches
CHAOS_MEAN = 200


def wrap_writer(recording_writer, gate, thread_id, chaos=False):
    """Record: make *recording_writer*'s ``write``/``bind`` put the switch to
    the calling thread on the tape first; returns the tracer (installed in
    threads by `start_record`)."""
    cls = tracer_class()
    tracer = cls("record", gate, _want, thread_id, PREEMPT,
                 write=recording_writer.write, bind=recording_writer.bind)
    tracer.active = False                 # until start_record
    if chaos:
        tracer.chaos = CHAOS_MEAN
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=tracer.after_fork)
    object.__setattr__(recording_writer, "write", tracer.write)
    object.__setattr__(recording_writer, "bind", tracer.bind)
    return tracer


def _install_everywhere(session, tracer, replay):
    tracer.current()                      # this (the main) thread
    previous = getattr(_threading, "_trace_hook", None)
    _threading.settrace(tracer)           # every thread started from here on
    session.installer.on_uninstall(lambda: _threading.settrace(previous))
    original_exit = session._exit_call

    def exit_call():
        try:
            return original_exit()
        finally:
            # After the exit event nothing is scheduled any more (threads
            # still running then are not replayed past it).
            if replay:
                tracer.enforce = False
            tracer.active = False
            tracer.uninstall()
    session._exit_call = exit_call


def start_record(session):
    session.schedule_tracer.active = True
    _install_everywhere(session, session.schedule_tracer, False)


class ReplaySchedule:
    """The replay side: who may run program code, and where the turn passes."""

    def __init__(self, session):
        self.session = session
        self.system = system = session.system
        self.seq = seq = system.sequencer
        self.reader = session.reader
        cls = tracer_class()
        self.tracer = cls("replay", system.gate, _want, session.threads.current, PREEMPT,
                          on_block=self._block, on_new=self._new)
        self.tickers: dict = {}
        self.runner = session.threads.current()
        self.next = _NONE          # the runner hands over to this thread at `stop`
        self.stop = -1
        seq.turn.closed += 1       # for good: every event through System.take_turn
        seq.before_turn = self._before_turn
        seq.after_move = self._settle
        seq.before_block = self._before_block

    def start(self):
        with self.seq.decisions:
            self._settle()
        _install_everywhere(self.session, self.tracer, True)

    # -- state (sequencer condition held) ---------------------------------
    def _count(self, tid):
        t = self.tickers.get(tid)
        return t.count if t is not None else 0

    def _new(self, ticker):
        with self.seq.decisions:
            self.tickers[ticker.tid] = ticker
            if ticker.tid == self.runner:
                ticker.may_run = True
                if self.next is not _NONE:
                    ticker.stop = self.stop

    def _set_runner(self, tid):
        if _DEBUG:
            _dbg(f"SCHED runner {self.runner}@{self._count(self.runner)} -> {tid} at {event_index(self.reader)}\n".encode())
        old = self.tickers.get(self.runner)
        if old is not None:
            old.may_run = False
            old.stop = -1
        self.runner = tid
        self.next = _NONE
        self.stop = -1
        new = self.tickers.get(tid)
        if new is not None:
            new.may_run = True
            new.stop = -1
        self.seq.changed()

    def _free(self):
        """The tape is used up: nothing more is scheduled."""
        self.tracer.enforce = False
        self.seq.changed()

    def _diverge(self, index, expected, actual):
        raise self.system.diverge(index, expected, actual)

    def _settle(self):
        """After the head moved or the runner changed: read the PREEMPT at
        the head when the head left the runner."""
        reader = self.reader
        while self.tracer.enforce and self.next is _NONE:
            if at_end(reader):
                self._free()
                return
            head = reader.thread
            if head is None or head == self.runner:
                return
            index = event_index(reader)
            expected = f"a thread switch from thread {self.runner} (--schedule)"
            if reader.next_kind != "value":
                self._diverge(index, expected, f"a new binding of thread {head}")
            tag = reader.read()
            if tag != PREEMPT:
                self._diverge(index, expected, f"{self.system.describe_tag(tag, None)} of thread {head}")
            prev = reader.read()
            count = reader.read()
            have = self._count(self.runner)
            if prev != self.runner or type(count) is not int:
                self._diverge(index, f"thread {prev} to be running",
                              f"thread {self.runner} running (--schedule)")
            if have == count:
                self._set_runner(head)
                continue
            if have > count:
                self._diverge(index, f"thread {prev} to be switched out after {count} instructions",
                              f"{have} instructions (--schedule)")
            self.next = head
            self.stop = count
            if _DEBUG:
                _dbg(f"SCHED pending {self.runner}@{have} stop {count} -> {head}\n".encode())
            t = self.tickers.get(self.runner)
            if t is not None:
                t.stop = count
            return

    def _hand_over_if_due(self, me):
        if self.runner == me and self.next is not _NONE:
            have = self._count(me)
            if have == self.stop:
                self._set_runner(self.next)
                self._settle()
                return True
        return False

    # -- hooks -------------------------------------------------------------
    def _before_turn(self, me, wait=True):
        """A thread asks for its next event (condition held). Only the
        runner takes events: the others wait until it is their turn to run.
        ``wait=False``: the main thread draining at exit."""
        if not self.tracer.enforce:
            return
        if not self._hand_over_if_due(me) and self.runner == me and self.next is not _NONE:
            self._diverge(event_index(self.reader),
                          f"thread {me} to run {self.stop - self._count(me)} more instructions "
                          f"before thread {self.next} runs",
                          f"its next event after {self._count(me)} (--schedule)")
        if wait:
            self._wait_runner(me)

    def _before_block(self, me):
        """A thread blocks in a real primitive without a turn (an untimed
        join): where the recorded run switched threads (condition held)."""
        if self.tracer.enforce:
            self._hand_over_if_due(me)

    def _wait_runner(self, me):
        """Wait until *me* is the runner (condition held); `Deadlock` when no
        thread can move for the sequencer's timeout."""
        tracer = self.tracer
        self.seq.wait_until(me, lambda: not tracer.enforce or self.runner == me,
                            "its turn to run (--schedule)")

    def _block(self, ticker, returning):
        """The tracer: *ticker*'s thread is at an instruction it may not run
        yet (not its turn, or its recorded switch point), or *returning* from
        a counted frame at its switch point (then it only hands over: what
        follows may be no program code at all, the end of the thread)."""
        gate = self.system.gate
        previous = gate.swap(utils.DISABLED)    # the waits below are ours, not the program's
        try:
            with self.seq.decisions:
                self._hand_over_if_due(ticker.tid)
                if not returning:
                    self._wait_runner(ticker.tid)
        except Exception as exc:
            from retracesoftware.proxy.thread_order import Deadlock
            if isinstance(exc, Deadlock):
                raise self.system.deadlock(exc) from None
            raise
        finally:
            gate.phase = previous


def start_replay(session):
    schedule = ReplaySchedule(session)
    session.schedule = schedule
    schedule.start()
    return schedule
