"""Pure-Python backend of retracesoftware.utils: the gateways (RecordGateway,
ReplayGateway, RecordCallGateway with flush_pending_calls, TurnState,
ReplayCallGateway, ReplaySyncGateway, MethodGateway, NewGateway). Their
contracts are the table of README.md in this folder; utils/_python.py
exports them.
"""
from __future__ import annotations

import os as _os
import sys as _sys
import threading as _threading
import types as _types
from _thread import allocate_lock as _allocate_lock

from retracesoftware.utils._python_fingerprint import fingerprint
from retracesoftware.utils._python_gate import DISABLED, EXTERNAL, INTERNAL, Gate
from retracesoftware.utils._python_typepatch import _tp_new_cell, _type_dict


# -------------------------------------------------------------- the caller's frame
# A recorded call runs its target from a frame that stands for the
# program's: same globals (module name, ``__warningregistry__``), file name
# and line as the frame that called the gateway (our own frames skipped).
# A warning the target issues (a C function warns at the innermost Python
# frame; Python code with stacklevel=2 at its caller) is then attributed,
# filtered and deduplicated as in a plain run, as with the C++ backend,
# whose gateways leave no Python frame. One function per call site (cached).
_OUR_DIR = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))) + _os.sep
_SITE_NAME = "<retrace call>"


def _site_template(target, args, kwargs): return target(*args, **kwargs)  # noqa: E704


_SITE_CODE = _site_template.__code__.replace(co_name=_SITE_NAME, co_qualname=_SITE_NAME) \
    if hasattr(_site_template.__code__, "co_qualname") else _site_template.__code__.replace(co_name=_SITE_NAME)
_sites: dict = {}


def _call_at_caller(target, args, kwargs):
    f = _sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_OUR_DIR):
        f = f.f_back
    if f is None:
        return target(*args, **kwargs)
    code = f.f_code
    # Keyed by the call instruction; the entry holds the code object, so
    # its id is not reused while cached.
    key = (id(code), f.f_lasti)
    entry = _sites.get(key)
    if entry is None or entry[1] is not code:
        lineno = f.f_lineno
        lineno = lineno if lineno and lineno > 0 else 1
        entry = _sites[key] = (
            _types.FunctionType(_SITE_CODE.replace(co_filename=code.co_filename, co_firstlineno=lineno),
                                f.f_globals),
            code)
    site = entry[0]
    f = None
    try:
        return site(target, args, kwargs)
    except BaseException as exc:
        # Not in the traceback: the program's line would show twice.
        tb = exc.__traceback__
        if tb is not None and tb.tb_frame.f_code.co_name == "_call_at_caller":
            nxt = tb.tb_next
            if nxt is not None and nxt.tb_frame.f_code.co_name == _SITE_NAME:
                tb.tb_next = nxt.tb_next
        tb = nxt = None     # no cycle through this frame (it is in the traceback)
        raise


class _Gateway:
    """Shared descriptor behaviour: bind like a function when fetched through
    an instance, so a gateway can sit in a type's ``__dict__``."""

    __slots__ = ()

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return _types.MethodType(self, obj)

    @property
    def __wrapped__(self):
        return self.target

    @property
    def __name__(self):
        return getattr(self.target, "__name__", type(self).__name__)



def _check_callable(name, value, optional):
    if value is None and optional:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable{' or None' if optional else ''}, got {type(value).__name__}")
    return value


class RecordGateway(_Gateway):
    """``RecordGateway(gate, target, before, after, error)``.

    Called while ``gate.phase == INTERNAL``: ``before(*a, **kw)`` (skipped if
    None), phase := EXTERNAL, ``r = target(*a, **kw)``, phase := INTERNAL, then
    ``after(r)`` is returned (None: ``r`` itself).  If target raises, the phase
    is restored, ``error(exc)`` is called (skipped if None) and the exception
    re-raised.  In any other phase: ``target(*a, **kw)`` straight through.
    """

    __slots__ = ("gate", "target", "before", "after", "error", "_cell")

    def __init__(self, gate, target, before=None, after=None, error=None):
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be a Gate, got {type(gate).__name__}")
        self.gate = gate
        self.target = _check_callable("target", target, False)
        self.before = _check_callable("before", before, True)
        self.after = _check_callable("after", after, True)
        self.error = _check_callable("error", error, True)
        self._cell = gate._cell

    def __call__(self, *args, **kwargs):
        cell = self._cell
        if cell.phase != INTERNAL:
            return self.target(*args, **kwargs)
        before = self.before
        if before is not None:
            before(*args, **kwargs)
        cell.phase = EXTERNAL
        try:
            result = _call_at_caller(self.target, args, kwargs)
        except BaseException as exc:
            cell.phase = INTERNAL
            error = self.error
            if error is not None:
                error(exc)
            raise
        cell.phase = INTERNAL
        after = self.after
        return result if after is None else after(result)

    def __repr__(self):
        return f"<RecordGateway for {self.target!r}>"


class ReplayGateway(_Gateway):
    """``ReplayGateway(gate, target, replay)``: ``replay(*a, **kw)`` while the
    phase is INTERNAL, else ``target(*a, **kw)``."""

    __slots__ = ("gate", "target", "replay", "_cell")

    def __init__(self, gate, target, replay):
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be a Gate, got {type(gate).__name__}")
        self.gate = gate
        self.target = _check_callable("target", target, False)
        self.replay = _check_callable("replay", replay, False)
        self._cell = gate._cell

    def __call__(self, *args, **kwargs):
        if self._cell.phase != INTERNAL:
            return self.target(*args, **kwargs)
        return self.replay(*args, **kwargs)

    def __repr__(self):
        return f"<ReplayGateway for {self.target!r}>"


_PLAIN_TYPES = frozenset({type(None), bool, int, float, str, bytes})


class _PendingCalls(_threading.local):
    def __init__(self):
        self.stack = []          # [write, call_tag, name, fp, written]


_pending = _PendingCalls()


class RecordCallGateway(_Gateway):
    """``RecordCallGateway(gate, target, write, call_tag, name, result_tag,
    error_tag, slow=None)``: a recorded call whose CALL is written together
    with its outcome (see README.md; same writes as the C++ backend)."""

    __slots__ = ("gate", "target", "write", "call_tag", "name", "result_tag", "error_tag", "slow",
                 "_cell", "_fp_noargs", "__weakref__")

    def __init__(self, gate, target, write, call_tag, name, result_tag, error_tag, slow=None):
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be a Gate, got {type(gate).__name__}")
        if not callable(target) or not callable(write) or (slow is not None and not callable(slow)):
            raise TypeError("target and write must be callable, slow callable or None")
        self.gate = gate
        self.target = target
        self.write = write
        self.call_tag = call_tag
        self.name = name
        self.result_tag = result_tag
        self.error_tag = error_tag
        self.slow = slow
        self._cell = gate._cell
        self._fp_noargs = fingerprint()

    def __call__(self, *args, **kwargs):
        cell = self._cell
        if cell.phase != INTERNAL:
            return self.target(*args, **kwargs)
        fp = fingerprint(*args, **kwargs) if (args or kwargs) else self._fp_noargs
        frame = [self.write, self.call_tag, self.name, fp, False]
        stack = _pending.stack
        stack.append(frame)
        cell.phase = EXTERNAL
        try:
            result = _call_at_caller(self.target, args, kwargs)
        except BaseException as exc:
            cell.phase = INTERNAL
            stack.pop()
            if frame[4]:
                self.write(self.error_tag, exc)
            else:
                self.write(self.call_tag, self.name, fp, self.error_tag, exc)
            raise
        cell.phase = INTERNAL
        stack.pop()
        if type(result) in _PLAIN_TYPES:
            if frame[4]:
                self.write(self.result_tag, result)
            else:
                self.write(self.call_tag, self.name, fp, self.result_tag, result)
            return result
        if not frame[4]:
            self.write(self.call_tag, self.name, fp)
        if self.slow is not None:
            return self.slow(result)
        self.write(self.result_tag, result)
        return result

    def __repr__(self):
        return f"<RecordCallGateway {self.name!r} for {self.target!r}>"


class _Permit:
    """One logical thread's wake-up permit (a binary semaphore): a lock held
    while there is no permit; ``guard`` keeps two wakes from releasing it
    twice (the C++ backend's Waiter)."""

    __slots__ = ("lock",)

    def __init__(self):
        self.lock = _allocate_lock()
        self.lock.acquire()


class TurnState:
    """The replay sequencer's native part (same contract as the C++
    backend): ``closed`` non-zero sends every replayed call down the slow
    path; per-thread permits (``wait``/``wake``/``wake_all``); ``handover``
    wakes the thread whose turn it is (through ``moved`` at the end of the
    tape, while ``draining``, or when ``probe`` cannot tell)."""

    __slots__ = ("closed", "changes", "draining", "native_wait", "probe", "moved", "_permits", "_guard")

    def __init__(self):
        self.closed = 0
        self.changes = 0
        self.draining = 0
        self.native_wait = 0.0
        self.probe = None
        self.moved = None
        self._permits = {}
        self._guard = _allocate_lock()

    def _permit(self, tid):
        permit = self._permits.get(tid)
        if permit is None:
            permit = self._permits[tid] = _Permit()
        return permit

    def wait(self, tid, timeout=None):
        lock = self._permit(tid).lock
        if timeout is None:
            return lock.acquire()
        return lock.acquire(True, max(timeout, 0.0))

    def wake(self, tid):
        lock = self._permit(tid).lock
        with self._guard:
            if lock.locked():
                lock.release()

    def wake_all(self):
        with self._guard:
            for permit in list(self._permits.values()):
                if permit.lock.locked():
                    permit.lock.release()

    def handover(self):
        self.changes += 1
        probe = self.probe
        if not self.draining and probe is not None:
            try:
                ended = probe.next_kind is None
                head = None if ended else probe.thread
                # an asynchronous event (a signal) at the head: the Python
                # hand-over arms its position search
                if head is not None and not getattr(probe, "async_next", False):
                    self.wake(head)
                    return
            except Exception:
                pass
        if self.moved is not None:
            self.moved()

    def _wait_native(self, me):
        """A gateway found another thread's event at the head: wait for this
        thread's turn (`ReplayCallGateway`). True: woken, try again; False:
        take the Python path."""
        probe = self.probe
        if self.closed or self.native_wait <= 0 or probe is None or self.draining:
            return False
        try:
            if probe.next_kind is None:
                return False
            head = probe.thread
            if head is None or head == me:
                return False
        except Exception:
            return False
        return self.wait(me, self.native_wait) and not self.closed


class ReplayCallGateway(_Gateway):
    """``ReplayCallGateway(gate, target, take, thread_id, turn, call_tag, name,
    result_tag, error_tag, slow, handover)``: a replayed call in one step
    (see README.md; the same contract as the C++ backend)."""

    __slots__ = ("gate", "target", "take", "thread_id", "turn", "call_tag", "name", "result_tag",
                 "error_tag", "slow", "handover", "_cell", "_fp_noargs", "__weakref__")

    def __init__(self, gate, target, take, thread_id, turn, call_tag, name, result_tag, error_tag,
                 slow, handover):
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be a Gate, got {type(gate).__name__}")
        if not isinstance(turn, TurnState):
            raise TypeError(f"turn must be a TurnState, got {type(turn).__name__}")
        for what, fn in (("target", target), ("take", take), ("thread_id", thread_id),
                         ("slow", slow)):
            _check_callable(what, fn, False)
        if handover is not None:
            _check_callable("handover", handover, False)
        self.gate, self.target, self.take, self.thread_id, self.turn = gate, target, take, thread_id, turn
        self.call_tag, self.name, self.result_tag, self.error_tag = call_tag, name, result_tag, error_tag
        self.slow, self.handover = slow, handover
        self._cell = gate._cell
        self._fp_noargs = fingerprint()

    def __call__(self, *args, **kwargs):
        cell = self._cell
        if cell.phase != INTERNAL:
            return self.target(*args, **kwargs)
        if self.turn.closed:
            return self.slow(*args, **kwargs)
        fp = fingerprint(*args, **kwargs) if args or kwargs else self._fp_noargs
        cell.phase = DISABLED
        try:
            me = self.thread_id()
            while True:
                got = self.take(me, self.call_tag, self.name, fp, self.result_tag, self.error_tag)
                if got is not None or not self.turn._wait_native(me):
                    break
            if got is not None and not got[2]:
                if self.handover is None:
                    self.turn.handover()
                else:
                    self.handover()
        finally:
            cell.phase = INTERNAL
        if got is None:
            return self.slow(*args, **kwargs)
        if got[0]:
            return got[1]
        try:
            raise got[1]
        finally:
            got = None

    def __repr__(self):
        return f"<ReplayCallGateway {self.name!r} for {self.target!r}>"


def thread_ids_changed():
    """A thread's logical id was given, changed or taken. The C++ replay
    gateways then ask their thread_id() again; these ask on every call."""


class ReplaySyncGateway(_Gateway):
    """``ReplaySyncGateway(gate, target, take, thread_id, turn, tag, try_now,
    returns, slow, *, real=None)``: a replayed lock acquire in one step (see README.md;
    the same contract as the C++ backend)."""

    __slots__ = ("gate", "target", "take", "thread_id", "turn", "tag", "try_now", "returns", "slow",
                 "real", "_cell", "__weakref__")

    def __init__(self, gate, target, take, thread_id, turn, tag, try_now, returns, slow, *, real=None):
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be a Gate, got {type(gate).__name__}")
        if not isinstance(turn, TurnState):
            raise TypeError(f"turn must be a TurnState, got {type(turn).__name__}")
        for what, fn in (("target", target), ("take", take), ("thread_id", thread_id),
                         ("try_now", try_now), ("slow", slow)):
            _check_callable(what, fn, False)
        if real is not None and not isinstance(real, str):
            raise TypeError(f"real must be an attribute name or None, got {type(real).__name__}")
        self.real = real
        self.gate, self.target, self.take, self.thread_id, self.turn = gate, target, take, thread_id, turn
        self.tag, self.try_now, self.returns, self.slow = tag, try_now, returns, slow
        self._cell = gate._cell

    #: take is always called as Python here (the C++ backend calls a C++
    #: reader's take_event in C: utils/cpp/native_take.h)
    native = False

    def __call__(self, *args, **kwargs):
        cell = self._cell
        if cell.phase != INTERNAL:
            return self.target(*args, **kwargs)
        turn = self.turn
        if turn.closed or not args:
            return self.slow(*args, **kwargs)
        lock = args[0]
        mine = lock.lock_id
        try_now = self.try_now
        real = self.real
        taken = []

        def accept(value):
            if turn.closed:
                return False
            if value is False:
                return True
            if value is not True and value != mine:
                return False
            if try_now(lock if real is None else getattr(lock, real), False):
                taken.append(True)
                return True
            return False

        cell.phase = DISABLED
        try:
            me = self.thread_id()
            while True:
                taken.clear()
                got = self.take(me, self.tag, accept)
                if got is not None:
                    break
                if taken:           # the head moved while accept ran: undone
                    lock.release()
                if not turn._wait_native(me):
                    break
            if got is not None and not got[1]:
                turn.handover()
        finally:
            cell.phase = INTERNAL
        if got is None:
            return self.slow(*args, **kwargs)
        return False if got[0] is False else self.returns

    def __repr__(self):
        return f"<ReplaySyncGateway {self.tag!r} for {self.target!r}>"


def flush_pending_calls():
    """Write the CALL of every recorded call in progress on this thread that
    has not been written yet (oldest first); returns how many were written."""
    stack = _pending.stack
    start = len(stack)
    while start > 0 and not stack[start - 1][4]:
        start -= 1
    for frame in stack[start:]:
        write, call_tag, name, fp, _ = frame
        write(call_tag, name, fp)
        frame[4] = True
    return len(stack) - start


class MethodGateway:
    """``MethodGateway(bound, gateway, real)``: in a patched type's dict in
    place of a method; ``gateway(self, ...)`` when ``id(self) in bound``, else
    ``real(self, ...)``. Binds like a function."""

    __slots__ = ("bound", "gateway", "real", "__weakref__")

    def __init__(self, bound, gateway, real):
        if not hasattr(bound, "__contains__"):
            raise TypeError(f"bound must be a dict or set of ids, got {type(bound).__name__}")
        if not callable(gateway) or not callable(real):
            raise TypeError(f"gateway and real must be callable, got {type(gateway).__name__} "
                            f"and {type(real).__name__}")
        self.bound = bound
        self.gateway = gateway
        self.real = real

    def __call__(self, *args, **kwargs):
        if not args:
            raise TypeError(f"{self!r} needs its instance as first argument")
        if id(args[0]) in self.bound:
            return self.gateway(*args, **kwargs)
        return self.real(*args, **kwargs)

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return _types.MethodType(self, obj)

    @property
    def __wrapped__(self):
        return self.real

    @property
    def __name__(self):
        return getattr(self.real, "__name__", "MethodGateway")

    def __repr__(self):
        return f"<MethodGateway for {self.real!r}>"


def _c_tp_new(owner):
    """A ctypes callable for the C tp_new of *owner* (a type)."""
    import ctypes

    proto = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object, ctypes.py_object, ctypes.c_void_p)
    return proto(_tp_new_cell(owner).value)


class NewGateway:
    """``NewGateway(cls, gate, on_new=None)``: a ``__new__`` for *cls* that
    runs its original allocation (resolved now, before patching: the nearest
    ``__new__`` along the MRO; a C ``tp_new`` is called directly), then
    ``on_new(obj)`` when the gate's phase is INTERNAL. Acts as a staticmethod."""

    __slots__ = ("cls", "gate", "on_new", "__wrapped__", "_cell", "_object", "_native", "_python",
                 "__weakref__")

    def __init__(self, cls, gate, on_new=None):
        if not isinstance(cls, type):
            raise TypeError(f"cls must be a type, got {type(cls).__name__}")
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be a Gate, got {type(gate).__name__}")
        if on_new is not None and not callable(on_new):
            raise TypeError(f"on_new must be callable or None, got {type(on_new).__name__}")
        self.cls = cls
        self.gate = gate
        self.on_new = on_new
        self._cell = gate._cell
        found = None
        for klass in cls.__mro__:
            d = _type_dict(klass)
            if "__new__" in d:
                found = d["__new__"]
                break
        if found is None:
            raise TypeError(f"NewGateway: {cls.__name__} has no __new__")
        self.__wrapped__ = found
        self._object = self._native = self._python = None
        owner = getattr(found, "__self__", None)
        if type(found) is _types.BuiltinFunctionType and isinstance(owner, type):
            if owner is object:
                self._object = True
            else:
                self._native = _c_tp_new(owner)
        else:
            self._python = cls.__new__          # staticmethod unwrapped

    @property
    def __name__(self):
        return "__new__"

    def __call__(self, *args, **kwargs):
        cls = self.cls
        if not args or not isinstance(args[0], type):
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}.__new__(X): X is not a type object")
        subtype = args[0]
        if not issubclass(subtype, cls):
            raise TypeError(f"{cls.__qualname__}.__new__({subtype.__qualname__}): {subtype.__qualname__} "
                            f"is not a subtype of {cls.__qualname__}")
        if self._object:
            if (len(args) > 1 or kwargs) and subtype.__init__ is object.__init__:
                raise TypeError(f"{subtype.__qualname__}() takes no arguments")
            obj = object.__new__(subtype)
        elif self._native is not None:
            obj = self._native(subtype, args[1:], id(kwargs) if kwargs else None)
        else:
            obj = self._python(*args, **kwargs)
        if self.on_new is not None and self._cell.phase == INTERNAL:
            self.on_new(obj)
        return obj

    def __repr__(self):
        return f"<NewGateway for {self.cls.__module__}.{self.cls.__qualname__}>"
