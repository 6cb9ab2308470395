"""Garbage collection at recorded points (docs/FIDELITY.md, docs/EVENTS.md).

An automatic collection runs where an allocation pushes the interpreter's
count over its threshold: a point the replay cannot find again (our runtime
allocates too, differently on record and on replay), so ``__del__``,
``weakref.finalize``, weakref callbacks and ``gc.callbacks`` would run
elsewhere on replay.

Record: automatic collection is taken away from the allocation counter. The
program's view (``gc.isenabled``, ``get_threshold``...) is kept virtual; the
interpreter's own first threshold is raised to a *safety valve* (50x, at
least 50,000). The counts are looked at on every `CHECK_EVERY`-th
boundary call (a ``CALL`` write, phase INTERNAL, a plain result): when
count0 has passed the program's threshold, that call first runs
``gc.collect(gen)`` — the generation CPython's own rule picks from the
counts — after writing ``GC gen``; ``GC_DONE collected`` follows the
collection's own events (finalizers, callbacks). So a collection comes at
most `CHECK_EVERY` boundary calls after CPython's own would; where is the
recording's to choose (the replay runs it at the recorded point). The
check is native combinators on the writer's ``write``, Python only when a
collection is due; no other write (a lock acquire's ``SYNC``...) runs
Python (see `GcPoints.wrap_write`). A pure-Python stretch that allocates
past the valve without any boundary call gets an automatic collection at
an arbitrary point: it is written as ``GC_VALVE gen`` (memory stays
bounded).

Replay: ``gc.disable()`` for the whole run. A ``GC``/``GC_VALVE`` event at
the head of a thread's tape is taken where that thread takes its turn
(`System.take_turn`, the Python path every replayed call falls back to when
its CALL is not at the head) and the collection runs there, in that thread,
as program code. ``GC_DONE`` is checked: a collection that freed another
number of objects than the recorded one is a divergence (exit 3): a valve
collection replayed at the next event (not at its recorded point) either
frees the same objects or is reported, never silently different.

The program's ``gc.collect()`` runs for real in both modes (its point is the
program's); its return value and ``gc.get_count()`` are recorded calls.

The program's ``gc.callbacks`` run inside our one callback
(`ProgramCallbacks`): as program code in a collection at a recorded point
(their boundary calls recorded and replayed inside it, after ``GC`` for
``start``, after ``GC_DONE`` for ``stop``), outside the recording in any
other collection.
"""
from __future__ import annotations

import _thread
import gc as _gc
import itertools
import operator

from retracesoftware import functional as F
from retracesoftware.proxy.protocol import ARGS, CALL, RESULT, STACK
from retracesoftware.proxy.thread_order import real_wait
from retracesoftware.utils import DISABLED, EXTERNAL, INTERNAL
from retracesoftware.utils.isolate import isolate_module
from retracesoftware.utils.startup import collector_enabled, resume_collector

GC = "GC"              # GC generation          a collection at this point (before the call it precedes)
GC_VALVE = "GC_VALVE"  # GC_VALVE generation    an automatic collection between events (safety valve)
GC_DONE = "GC_DONE"    # GC_DONE collected      after the collection's own events

_collect = _gc.collect
_get_count = _gc.get_count
_isenabled = _gc.isenabled
_enable = _gc.enable
_disable = _gc.disable
_get_threshold = _gc.get_threshold
_set_threshold = _gc.set_threshold
# a lock of our own (the copy taken before install: program code's
# allocate_lock may be ours by now)
_allocate_lock = isolate_module(_thread).allocate_lock

_INF = float("inf")
#: the collector's counts are looked at on one boundary call in this many
CHECK_EVERY = 8
#: the tape name of an output write (install/output.py OUTPUT_CALL)
OUTPUT_CALL = "retrace.output"
_WRITE_STARTS = (RESULT, ARGS, STACK)


def _valve(threshold0):
    return max(50 * threshold0, 50_000) if threshold0 > 0 else 0


class GcPoints:
    """The collector's state as the program sees it, and the collections
    that run at recorded points. One per session (``mode`` record/replay)."""

    def __init__(self, mode):
        self.mode = mode
        self.system = None
        self.gate = None
        self.enabled = collector_enabled()   # (made while the CLI paused it: utils/startup.py)
        self.thresholds = tuple(_get_threshold())
        #: what the running collection is: "placed", "valve", "replayed",
        #: "explicit" (the program's gc.collect), "other", None
        self.kind = None
        self._old_phase = None
        # fast check: count0 above the threshold the program started with
        t0 = self.thresholds[0] if self.thresholds[0] > 0 else 700
        self._fixed = (t0, _INF, _INF)
        # then the live one: [T0, inf] < list(counts) <=> count0 > T0
        self._live = [self.thresholds[0] if self.thresholds[0] > 0 else _INF, _INF]
        self._write = None
        self._installed = False
        self._valve_pending = False
        self._last_tag = None
        #: held by the thread running a placed (record) or replayed
        #: collection (a real lock)
        self._collecting = _allocate_lock()

    # ------------------------------------------------------------ record
    def wrap_write(self, write):
        """The recording writer's ``write`` with the collection check in
        front (native combinators; Python only when a collection is due)."""
        self._write = write
        due = F.compose(F.partial(operator.lt, self._live), list, F.repeatedly(_get_count))
        inner = F.if_then_else(due, self._on_due, write)
        fast = F.compose(F.partial(operator.lt, self._fixed), F.repeatedly(_get_count))
        # Only a CALL write can be a collection's point (`_on_due`); any
        # other write (a lock acquire's SYNC, a RESULT) stays native even
        # while a collection is due. A Python frame there is where the
        # interpreter hands the GIL to a waiting thread: inside a lock's
        # critical section, that thread then sleeps on the lock, and from
        # then on every release of it is a futex wake-up (a lock convoy:
        # 4 threads x 300k `with lock:` took 7x plain instead of 2x).
        is_call = F.compose(F.partial(operator.eq, CALL), F.first_arg)
        # gc.get_count() (a tuple) and the compare cost ~70 ns, as much as
        # the write itself: asked on one CALL write in CHECK_EVERY.
        tick = F.repeatedly(itertools.cycle((False,) * (CHECK_EVERY - 1) + (True,)).__next__)
        return F.if_then_else(is_call, F.if_then_else(tick, F.if_then_else(fast, inner, write), write), write)

    def _on_due(self, *values):
        # Never at an output write's CALL: it is written after the real
        # write (install/output.py), and the replay writes for real only
        # after the collection ran at that event. What gc.callbacks print
        # (they write outside the recording) would land after the write on
        # record and before it on replay. The collection stays due: it runs
        # at the next boundary call — the next output write's `before_call`,
        # before its real write, as on replay.
        if (self.kind is None and self.enabled and len(values) >= 5 and values[0] == CALL
                and values[3] in _WRITE_STARTS and values[1] != OUTPUT_CALL
                and self.gate is not None and self.gate.phase == INTERNAL):
            self._placed()
        return self._write(*values)

    def before_call(self):
        """Record, at the start of a boundary call made in Python whose
        effect the replay performs too (output writes): a due collection
        runs here, before the effect, where the replay runs it."""
        if (self.kind is None and self.enabled and self._write is not None
                and self.thresholds[0] > 0 and _get_count()[0] > self.thresholds[0]
                and self.gate is not None and self.gate.phase == INTERNAL):
            self._placed()

    def _generation(self):
        counts = _get_count()
        t = self.thresholds
        if t[2] and counts[2] > t[2]:
            return 2
        if t[1] and counts[1] > t[1]:
            return 1
        return 0

    def _placed(self, gen=None):
        # One placed collection at a time, claimed before its GC is
        # written: the write can hand the GIL to a thread that would find
        # `kind` still None and place its own GC inside this one (its
        # gc.collect then returns at once, without callbacks): the tape
        # would not say which collection ran where. Busy: still due.
        busy = self._collecting
        if not busy.acquire(False):
            return
        try:
            if self.kind is not None:
                return
            if gen is None:
                gen = self._generation()
            self.kind = "placed"
            try:
                self._write(GC, gen)
                _collect(gen)
            finally:
                self.kind = None
        finally:
            busy.release()

    def at_exit(self):
        """Record, the program's end (main thread, phase INTERNAL, just
        before the exit call): one full collection at this recorded point,
        so the cycles left run their finalizers here in both runs — not in
        our runtime's shutdown, where record and replay differ."""
        if self.mode != "record" or self.kind is not None or self._write is None:
            return
        self._placed(2)

    def after_end(self):
        """Both runs, after the program's end (its exit call): the
        interpreter's collector as on record (the valve threshold, on iff
        the program left collection on), so what runs after the recording
        ends — our shutdown's automatic collections, the interpreter's
        finalization collection, and the program's ``gc.callbacks`` in
        them, outside the recording — runs in the replay too."""
        t0, t1, t2 = self.thresholds
        try:
            _set_threshold(_valve(t0), t1, t2)
            (_enable if self.enabled else _disable)()
        except Exception:
            pass

    def _apply_real(self):
        """Record: the interpreter's own automatic collection is the safety
        valve only (off when the program turned collection off)."""
        t0, t1, t2 = self.thresholds
        if self.mode == "record":
            _set_threshold(_valve(t0), t1, t2)
            if self.enabled:
                _enable()
            else:
                _disable()
        else:
            _disable()
        self._live[0] = t0 if t0 > 0 else _INF

    # ---------------------------------------------------------- callback
    def enter(self, phase, info):
        """`ProgramCallbacks`, before the program's ``gc.callbacks`` of this
        phase: the gate phase they run in (INTERNAL: a collection at a
        recorded point, their boundary calls are recorded and replayed
        inside it; DISABLED: a collection the other run does not make)."""
        try:
            if self.mode == "record":
                return self._record_enter(phase, info)
            return self._replay_enter(phase, info)
        except Exception:   # never in the collector's way
            return DISABLED

    def leave(self, phase, info):
        """`ProgramCallbacks`, after the program's ``gc.callbacks``."""
        if phase != "stop":
            return
        kind = self.kind
        if kind == "valve" and self.mode == "record":
            self.gate.phase = self._old_phase
        if kind in ("valve", "other"):
            self.kind = None

    def _record_enter(self, phase, info):
        kind = self.kind
        gate = self.gate
        if phase == "start":
            if kind is not None:
                return DISABLED if kind == "other" else gate.phase
            if gate is None or gate.phase not in (INTERNAL, EXTERNAL):
                self.kind = "other"        # our runtime's own time: not the program's
                return DISABLED
            try:
                self._write(GC_VALVE, info.get("generation", 0))
            except Exception:              # the writer is busy (GC inside a write)
                self.kind = "other"
                return DISABLED
            self.kind = "valve"
            self._old_phase = gate.swap(INTERNAL)   # finalizers are the program's
            return INTERNAL
        # stop: the end is on the tape before the program's callbacks' own
        # events (the replay reads it there, and hands them its count; the
        # program's gc.collect() too: our runtime's garbage counts in it)
        if kind in ("placed", "valve", "explicit"):
            try:
                self._write(GC_DONE, info.get("collected", 0))
            except Exception:
                pass
            return INTERNAL
        if kind is None or kind == "other":
            return DISABLED
        return gate.phase if gate is not None else DISABLED

    def _replay_enter(self, phase, info):
        kind = self.kind
        if kind == "replayed":
            if phase == "stop":
                self._replay_done(info)
            return INTERNAL
        if kind == "explicit":
            if phase == "stop":
                self._replay_done(info)
            return self.gate.phase
        # our runtime's own collection (automatic collection is off):
        # the recording has no such point
        return DISABLED

    def _replay_done(self, info):
        system = self.system
        gate = system.gate
        old = gate.swap(DISABLED)
        try:
            seq = system.take_turn("the end of a garbage collection")
            try:
                reader = system.reader
                from retracesoftware.proxy.protocol import event_index
                index = event_index(reader)
                try:
                    tag = reader.read()
                    value = reader.read()
                except EOFError:
                    tag = value = None
            finally:
                seq.release()
            collected = info.get("collected", 0)
            if tag != GC_DONE or type(value) is not int:
                system.diverge(index, system.describe_tag(tag, value),
                                f"the end of a garbage collection (it freed {collected} objects)")
                return
            # A valve collection run at the next event frees another count
            # when our runtime's own garbage differs between the two runs
            # (the Python backend; big imports): the count alone is no
            # divergence. What its finalizers do is still checked (output,
            # boundary calls).
            # The program's gc.callbacks get the recorded count (the info
            # dict is shared by all callbacks; ours runs first): objects that
            # boundary calls returned are other objects on replay (stubs).
            info["collected"] = value
        except Exception:
            pass
        finally:
            gate.phase = old

    # ------------------------------------------------------------ replay
    def take_head(self, system):
        """`System.take_turn` hook (turn held): a GC event at the head of
        this thread's tape is consumed; returns what runs the collection
        (after the turn is released), else None."""
        reader = system.reader
        tid = system.thread_id()
        got = reader.take_event(tid, GC, _accept_generation)
        self._last_tag = GC
        if got is None:
            got = reader.take_event(tid, GC_VALVE, _accept_generation)
            self._last_tag = GC_VALVE
            if got is None:
                return None
        gen = got[0]
        valve = self._last_tag == GC_VALVE
        return lambda: self._replay_collect(gen, valve)

    def _replay_collect(self, gen, valve=False):
        # One replayed collection at a time. Another thread's may not have
        # returned from gc.collect yet (it took its GC_DONE and passed the
        # turn on, then ran the program's "stop" callbacks): CPython's
        # collect would return at once, without our callback, and this
        # thread's GC_DONE would stay at the head (exit 3, "expected call
        # ..., got the end of a garbage collection"). On record the next
        # collection is placed only once the last one returned (`kind`).
        busy = self._collecting
        real_wait(self.system, lambda t: busy.acquire(True, t) if t else busy.acquire(False),
                  "another thread's garbage collection")
        gate = self.gate
        old = gate.swap(INTERNAL)
        self.kind = "replayed"
        self._valve_pending = valve
        try:
            _collect(gen)
        finally:
            self.kind = None
            self._valve_pending = False
            gate.phase = old
            busy.release()

    # ------------------------------------------------ the program's view
    def install(self, system, installer):
        self.system = system
        self.gate = system.gate
        if self._installed:
            return
        self._installed = True
        saved = (collector_enabled(), tuple(_get_threshold()))
        # Start both runs with no garbage of ours (start-up cycles differ
        # between record and replay and would count in the first full
        # collection's number).
        _collect()
        # The CLI paused automatic collection for our start-up: on again
        # only now, after the collection (one walk of the start-up's young
        # objects, not two); _apply_real then sets what this mode runs with.
        resume_collector()
        self._apply_real()
        # The program's gc.callbacks run inside our one callback, in the
        # phase the collection's kind gives them (`enter`).
        callbacks = program_callbacks(installer, system.gate)
        callbacks.points = self
        set_ = installer.patch
        set_(_gc, "enable", self.enable)
        set_(_gc, "disable", self.disable)
        set_(_gc, "isenabled", self.isenabled)
        set_(_gc, "get_threshold", self.get_threshold)
        set_(_gc, "set_threshold", self.set_threshold)
        set_(_gc, "collect", self.collect)
        # what the program reads of the counters differs by our runtime's
        # allocations: a recorded call
        set_(_gc, "get_count", system.patch_function(_get_count, "gc.get_count"))
        if self.mode == "replay":
            system.special_events = self.take_head

        def undo():
            if callbacks.points is self:
                callbacks.points = None
            _set_threshold(*saved[1])
            (_enable if saved[0] else _disable)()
            if getattr(system, "special_events", None) == self.take_head:
                system.special_events = None
        installer.on_uninstall(undo)

    def enable(self):
        self.enabled = True
        self._apply_real()

    def disable(self):
        self.enabled = False
        self._apply_real()

    def isenabled(self):
        return self.enabled

    def get_threshold(self):
        return self.thresholds

    def set_threshold(self, threshold0, *rest):
        if len(rest) > 2:
            raise TypeError(f"set_threshold expected at most 3 arguments, got {1 + len(rest)}")
        t = [operator.index(threshold0), *map(operator.index, rest)]
        t += list(self.thresholds[len(t):])
        # The interpreter's checks and errors — with automatic collection
        # off meanwhile: the count is usually past a low new threshold (the
        # valve's is higher), and the next allocation would collect at
        # this arbitrary point (a GC_VALVE the replay runs elsewhere).
        _disable()
        try:
            _set_threshold(*t)
            self.thresholds = tuple(t)
        finally:
            self._apply_real()

    def collect(self, generation=2):
        if self.gate is None or self.gate.phase != INTERNAL:
            return _collect(generation)
        outer, self.kind = self.kind, "explicit"
        try:
            n = _collect(generation)
        finally:
            self.kind = outer
        return self._collected(n)

    def _collected(self, n):
        return n


class ProgramCallbacks:
    """The program's ``gc.callbacks``, run by one callback of ours.

    ``gc.callbacks`` as the program sees it is a list of its own; the
    interpreter's list holds only `dispatch`, which runs the program's
    callbacks as the collector would (in order, a list changed while it
    runs included, an exception reported as unraisable with the callback
    as its object) in the gate phase the collection gives them:

    * a collection at a recorded point (record: placed, valve; replay: the
      recorded ones; the program's own ``gc.collect()``) — INTERNAL: what
      the callbacks call (``time.perf_counter``, ``random``, I/O, logging)
      is recorded inside the collection and replayed there;
    * any other collection (our runtime's own time, or no recorded points:
      ``RETRACE_NO_GC_POINTS``, ``--schedule``) — DISABLED, outside the
      recording: the other run does not make that collection.

    Wherever the program puts its callback (hypothesis inserts its own at
    the front), our start comes before its events and our end (``GC_DONE``)
    before its stop events, in both runs: the interpreter's list holds no
    callback of the program's to come before ours."""

    def __init__(self, gate):
        self.gate = gate
        self.real = _gc.callbacks
        self.program = []
        #: the session's `GcPoints` while collections are at recorded points
        self.points = None
        #: the one entry of the interpreter's list (a bound method made once:
        #: each `self.dispatch` is a new object)
        self.entry = self.dispatch

    def install(self, installer):
        real, program, entry = self.real, self.program, self.entry
        program[:] = [cb for cb in real if cb is not entry]
        real[:] = [entry]
        installer.patch(_gc, "callbacks", program)

        def undo():
            kept = [cb for cb in real if cb is not entry]
            real[:] = program + kept
            if getattr(installer, "gc_program_callbacks", None) is self:
                installer.gc_program_callbacks = None
        installer.on_uninstall(undo)

    def dispatch(self, phase, info):
        points = self.points
        gate = self.gate
        run_in = points.enter(phase, info) if points is not None else DISABLED
        old = gate.swap(run_in) if gate is not None else None
        try:
            callbacks = self.program
            i = 0
            while i < len(callbacks):
                cb = callbacks[i]
                try:
                    cb(phase, info)
                except BaseException as exc:    # as the collector: reported, not raised
                    _unraisable(exc, cb, gate)
                i += 1
        finally:
            if gate is not None:
                gate.phase = old
            if points is not None:
                points.leave(phase, info)


def program_callbacks(installer, gate):
    """The installer's `ProgramCallbacks` (made and installed on first use)."""
    callbacks = getattr(installer, "gc_program_callbacks", None)
    if callbacks is None:
        callbacks = ProgramCallbacks(gate)
        callbacks.install(installer)
        installer.gc_program_callbacks = callbacks
    return callbacks


_hook_args = []


class _Shown:
    """An object whose repr is a text taken before (the default hook's
    "Exception ignored in: <repr>")."""
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _unraisable(exc, obj, gate):
    """``PyErr_WriteUnraisable(obj)`` for *exc*, as the collector reports a
    callback's exception (its traceback from the callback's frame on),
    through ``sys.unraisablehook`` (the replay's looks for a divergence).
    The interpreter's default hook reads the source lines: it runs outside
    the recording, with the object's repr taken in the program's phase (an
    id replays); a hook of the program's runs in the program's phase."""
    import sys
    if not _hook_args:
        _hook_args.append(_unraisable_args_type())
    make = _hook_args[0]
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    try:
        hook = sys.unraisablehook
        if make is None:
            raise TypeError("no UnraisableHookArgs")
        base = hook
        while getattr(base, "__wrapped__", None) is not None:
            base = base.__wrapped__
        if base is not sys.__unraisablehook__ or gate is None:
            hook(make((type(exc), exc, tb, None, obj)))
            return
        try:
            shown = _Shown(repr(obj))
        except BaseException:
            shown = _Shown("<object repr() failed>")
        old = gate.swap(DISABLED)
        try:
            hook(make((type(exc), exc, tb, None, shown)))
        finally:
            gate.phase = old
    except BaseException:
        import traceback
        try:
            print(f"Exception ignored in: {obj!r}", file=sys.stderr)
            traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
        except BaseException:
            pass


def _unraisable_args_type():
    """``sys.UnraisableHookArgs`` (not a public name): the type of what the
    interpreter hands ``sys.unraisablehook``, taken from one report."""
    import sys
    got = []
    old = sys.unraisablehook
    sys.unraisablehook = got.append
    try:
        class _Raises:
            def __del__(self):
                raise RuntimeError
        _Raises()
    finally:
        sys.unraisablehook = old
    return type(got[0]) if got else None


def _accept_generation(value):
    return type(value) is int and 0 <= value <= 2


def install(session, installer):
    """Wire the session's `GcPoints` (made before its System: record)."""
    points = getattr(session, "gc_points", None)
    if points is None:
        points = session.gc_points = GcPoints(session.mode)
    points.install(session.system, installer)
    # the value the program's gc.collect() returned (our runtime's garbage
    # counts in it, and boundary results are other objects on replay):
    # recorded. No arguments on the tape (the replay's own count differs).
    held = []
    tape = session.system.patch_function(lambda: held.pop() if held else 0, "gc.collect.result")

    def collected(n):
        held[:] = [n]
        try:
            return tape()
        finally:
            held.clear()
    points._collected = collected
    return points
