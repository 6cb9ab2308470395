"""`System`: the record/replay boundary (DESIGN §3, tape grammar docs/EVENTS.md).

Per call, the work is done by `utils` gateways (vectorcall in the C++
backend): ``RecordGateway(gate, target, before, after, error)`` on record,
``ReplayGateway(gate, target, replay)`` on replay. This module builds them
at patch time and supplies the rare paths (binding new objects, callbacks,
divergence reports). Our own work runs with the phase DISABLED so that any
patched thing we touch (locks, ``time``) passes straight through.
"""
from __future__ import annotations

import functools
import os
import reprlib
import sys
import threading
import traceback
import warnings
import weakref

from retracesoftware import functional as F
from retracesoftware import utils
from retracesoftware.utils.log import Log
from retracesoftware.utils import (DISABLED, EXTERNAL, INTERNAL, Gate,
                                   MethodGateway, NewGateway, RecordCallGateway,
                                   RecordGateway, ReplayCallGateway, ReplayGateway,
                                   fingerprint, flush_pending_calls)
from retracesoftware.utils.errors import ReplayDivergence

from retracesoftware.proxy.protocol import (is_structseq, BIND, CALL, CALLBACK, CALLBACK_DEF,
                                            CALLBACK_ERROR, CALLBACK_RESULT,
                                            ERROR, NEW, RESULT, STACK, ARGS, WARNING,
                                            event_index)
from retracesoftware.proxy.stubs import (ExternalObject, StubFactory,
                                         external_call, external_getattr)
from retracesoftware.proxy.thread_order import Deadlock, ThreadIds, ThreadSequencer

log = Log("retracesoftware")   # (utils/log.py: logging is not imported at start-up)

RECORD = "record"
REPLAY = "replay"

_PLAIN = frozenset({type(None), bool, int, float, str, bytes})
_SCALAR_BASES = (bool, int, float, str, bytes)
_EXTERNAL_PREFIX = "external:"
_FP_NO_ARGS = fingerprint()

# Frames that are not the program's: every file of the installed
# retracesoftware package (all layers, the CLI, the runner), and the frozen
# runpy/importlib frames that start a script or run an import (the
# installer's import hook is compiled under importlib's name too).
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_MACHINERY_PREFIXES = ("<frozen runpy>", "<frozen importlib")

# The standard library: a call the stdlib makes on the program's behalf is
# reported at the program's line. site-packages may live inside it.
_STDLIB_DIRS = tuple({os.path.dirname(os.path.abspath(p)) + os.sep
                      for p in (os.__file__, traceback.__file__)})
_SITE_DIRS = ("site-packages", "dist-packages")


def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def machinery_frame(filename: str) -> bool:
    """True for a frame of our runtime or of the import machinery (not program code)."""
    return filename.startswith(_PACKAGE_DIR) or filename.startswith(_MACHINERY_PREFIXES)


_machinery_frame = machinery_frame


def _stdlib_frame(filename: str) -> bool:
    if filename.startswith("<frozen "):
        return True
    if not filename.startswith(_STDLIB_DIRS):
        return False
    return not any(part in _SITE_DIRS for part in filename.split(os.sep))


def capture_stack():
    """The program's Python stack, innermost last: frames of retracesoftware
    itself and of frozen runpy/importlib removed (stdlib frames stay)."""
    capture = getattr(utils, "capture_stack", None)
    if capture is not None:
        frames = [tuple(f)[:3] for f in capture()]
    else:
        frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_stack()]
    return tuple(f for f in frames if not _machinery_frame(f[0]))


_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4


def _summary(value) -> str:
    """repr of plain values only: never runs a program's (or external) __repr__."""
    t = type(value)
    if t in _PLAIN or t in (tuple, list, dict, set, frozenset):
        try:
            return _repr.repr(value)
        except Exception:
            pass
    return f"<{t.__name__}>"


def _describe_exc(exc) -> str:
    return f"{type(exc).__name__}({', '.join(_summary(a) for a in exc.args)})"


def describe_call(name, args, kwargs) -> str:
    parts = [_summary(a) for a in args]
    parts += [f"{k}={_summary(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _describe_recorded(name, fp, summary=None) -> str:
    if isinstance(summary, str):
        return f"{name}({summary})"
    if fp == _FP_NO_ARGS:
        return f"{name}()"
    return f"{name}(<args fingerprint {fp:#010x}>)" if isinstance(fp, int) else f"{name}(?)"


def _where(stack) -> str:
    """file:line of the innermost frame outside the stdlib (the program's
    line when the stdlib made the call on its behalf), else the innermost."""
    if not stack:
        return "<unknown>"
    for filename, lineno, _ in reversed(stack):
        if not _stdlib_frame(filename):
            return f"{os.path.basename(filename)}:{lineno}"
    filename, lineno, _ = stack[-1]
    return f"{os.path.basename(filename)}:{lineno}"


class BindingToken:
    """What a recording writer binds in place of a program object.

    The writer keeps what it binds alive until ``unbind``; binding a token
    instead lets the object itself die. The System writes the token wherever
    the object appears in a value (same handle on the tape), and when the
    object dies (weakref callback) unbinds the token (``BINDING_DELETE``).
    Hashes by address, never through identity hashing, so the runtime's own
    objects do not consume the program's deterministic hash counter.
    """

    __slots__ = ("typename", "__weakref__")

    def __init__(self, typename):
        self.typename = typename

    def __hash__(self):
        return id(self) >> 4

    def __repr__(self):
        return f"<binding of a {self.typename}>"


class _BoundRef(weakref.ref):
    """A weak reference to a bound object, remembering its key and token."""

    __slots__ = ("key", "token", "proxy_key")

    def __new__(cls, obj, callback, key, token, proxy_key=None):
        self = super().__new__(cls, obj, callback)
        self.key = key
        self.token = token
        self.proxy_key = proxy_key
        return self

    def __init__(self, obj, callback, key, token, proxy_key=None):
        super().__init__(obj, callback)


class _StrongRef:
    """Stand-in for `_BoundRef` for objects that cannot be weakly referenced
    (``_random.Random``, ``sqlite3.Connection``): held until the System goes."""

    __slots__ = ("obj", "key", "token", "proxy_key")

    def __init__(self, obj, key, token):
        self.obj = obj
        self.key = key
        self.token = token
        self.proxy_key = None

    def __call__(self):
        return self.obj


class Callback:
    """A user function handed to external code (``System.callback``)."""

    __slots__ = ("fn", "name", "_system", "_bound", "__weakref__")

    def __init__(self, system, fn, name):
        self.fn = fn
        self.name = name
        self._system = system
        self._bound = False

    def __call__(self, *args, **kwargs):
        system = self._system
        if (not self._bound or system.mode != RECORD
                or system.gate.phase != EXTERNAL):
            return self.fn(*args, **kwargs)
        return system._record_callback(self, args, kwargs)

    def __repr__(self):
        return f"<retrace callback {self.name}>"


class _Enabled:
    __slots__ = ("_system", "_tid", "_old")

    def __init__(self, system):
        self._system = system

    def __enter__(self):
        system = self._system
        self._tid = system._thread_id()
        if system._sequencer is not None:
            system._sequencer.enter(self._tid)
        self._old = system.gate.swap(INTERNAL)
        return system

    def __exit__(self, *exc):
        system = self._system
        system.gate.phase = self._old
        if system._sequencer is not None:
            system._sequencer.leave(self._tid)
        return False


class System:
    """The boundary between a program (internal) and the world (external).

    ``System("record", writer=w)`` or ``System("replay", reader=r)``; see
    proxy/README.md for the whole API.
    """

    def __init__(self, mode, *, writer=None, reader=None, thread_id=None,
                 record_stacks=False, deadlock_timeout=5.0, stub_factory=None, gate=None):
        if mode not in (RECORD, REPLAY):
            raise ValueError(f"mode must be 'record' or 'replay', got {mode!r}")
        if mode == RECORD and writer is None:
            raise TypeError("System('record') needs writer=")
        if mode == REPLAY and reader is None:
            raise TypeError("System('replay') needs reader=")
        self.mode = mode
        self.gate = Gate() if gate is None else gate   # given: --schedule (install/schedule.py)
        self.writer = writer
        self.reader = reader
        self.record_stacks = record_stacks
        #: replay: ``fn(args, kwargs) -> bool``; True skips the argument
        #: fingerprint check of that call (it carries a placeholder for a
        #: secret redacted from the recording: install/redaction.py)
        self.fingerprint_exempt = None
        # tape name -> summariser(*args, **kwargs) -> str: its calls are
        # recorded with an ARGS summary (configs `summarise`; record only).
        self.summaries: dict = {}
        self.stub_factory = stub_factory or StubFactory()
        self._thread_id = thread_id or ThreadIds()
        self._sequencer = (ThreadSequencer(reader, self._thread_id, deadlock_timeout=deadlock_timeout)
                           if mode == REPLAY else None)
        if self._sequencer is not None:
            self._sequencer.describe_next = self._describe_head
        # id(obj) -> _BoundRef (weak; removed when obj dies) or _StrongRef.
        # Keyed by id: the runtime never hashes program objects.
        self._bound: dict[int, object] = {}
        self._proxies: dict[int, _BoundRef] = {}     # id(target) -> ref to its ExternalObject
        self._pending_unbind: list = []              # tokens a busy writer refused
        self._types: dict[str, type] = {}            # qualified name -> patched type
        self._patched_tuple: tuple = ()
        self._by_value: tuple = ()                   # config `immutable`: stored by value
        self._undo: list = []
        self.divergence: ReplayDivergence | None = None
        #: replay: ``fn(what)`` run before a thread takes a turn (install/signals.py)
        self.before_turn = None
        #: replay: ``fn(system) -> callable | None``, asked in every turn
        #: (turn held): consumes an event of this thread at the head that
        #: is no call's (a garbage collection) and returns what runs it
        self.special_events = None
        if mode == RECORD:
            # The per-call result path, native: a plain value (exact type
            # None/bool/int/float/str/bytes) is written as RESULT value and
            # returned; anything else takes the Python path (_record_result).
            self._record_after = F.if_then_else(
                F.compose(_PLAIN.__contains__, type),
                F.side_effect(F.partial(writer.write, RESULT)),
                self._record_result)
            self._record_error = F.partial(writer.write, ERROR)
        self._warnings_shown = threading.local()   # replay: .n counts warnings the hook saw
        self._external_type = type("ExternalObject", (ExternalObject,), {"__slots__": ()})
        self._external_type.__getattr__ = self._gateway(external_getattr, "retrace.external.getattr")
        self._external_type.__call__ = self._gateway(external_call, "retrace.external.call")

    # ------------------------------------------------------------ phases
    def enable(self):
        """Context manager: run the body as program code (INTERNAL) on this thread."""
        return _Enabled(self)

    def run(self, fn, /, *args, **kwargs):
        with _Enabled(self):
            return fn(*args, **kwargs)

    def disable_for(self, fn):
        """``fn`` wrapped to run DISABLED (unrecorded, real calls)."""
        wrapper = functools.partial(self.gate.call, DISABLED, fn)
        return wrapper

    def expect_thread(self, tid):
        """Announce (in the parent, before ``start()``) a thread that will
        replay as logical thread *tid*: the deadlock watchdog counts it live."""
        if self._sequencer is not None:
            self._sequencer.expect(tid)

    @property
    def thread_id(self):
        return self._thread_id

    @property
    def sequencer(self):
        """The replay's `ThreadSequencer` (proxy/thread_order.py), or None when
        recording. Its public methods are the interface install uses:
        ``enter``/``leave``/``expect`` a thread, ``drain()`` at exit,
        ``decisions`` (the condition held for every turn decision),
        ``end_probe`` and ``turn``."""
        return self._sequencer

    # ---------------------------------------------------------- patching
    def _gateway(self, target, name):
        """The gateway for one boundary callable, named *name* on the tape."""
        if self.mode == RECORD:
            write = self.writer.write
            summarise = self.summaries.get(name)
            if summarise is not None:
                stacks = self.record_stacks

                def before(*args, **kwargs):
                    try:
                        summary = summarise(*args, **kwargs)
                    except Exception:
                        summary = "?"
                    if stacks:
                        write(CALL, name, fingerprint(*args, **kwargs), ARGS, summary, STACK, capture_stack())
                    else:
                        write(CALL, name, fingerprint(*args, **kwargs), ARGS, summary)
                return RecordGateway(self.gate, target, before, self._record_after, self._record_error)
            if self.record_stacks:
                def before(*args, **kwargs):
                    write(CALL, name, fingerprint(*args, **kwargs), STACK, capture_stack())
                return RecordGateway(self.gate, target, before, self._record_after, self._record_error)
            # All native: CALL written with its outcome in one write (a
            # callback during the call flushes it first: _record_callback).
            return RecordCallGateway(self.gate, target, write, CALL, name, RESULT, ERROR,
                                     self._record_result)
        live = getattr(self, "live_call_filter", None)
        if live is not None:   # replay of another checkout: code read live is read here (retracesoftware/paths.py)
            target = live(target, name)
        # All native while the call and its outcome are this thread's next
        # events (Reader.take_call: a recorded error is raised from native
        # code, so its traceback holds only the program's frames); else the
        # Python path (_replay_entry).
        seq = self._sequencer
        return ReplayCallGateway(self.gate, target, self.reader.take_call, self._thread_id, seq.turn,
                                 CALL, name, RESULT, ERROR, self._replay_entry(name), seq.handover)

    def feed_calls(self, wrap, on_bind):
        """Record mode, before anything is patched: answer the program's
        calls from elsewhere (``retrace fork``'s feeder, views/fork.py).

        Every gateway made from now on writes CALL first (with the summary
        of a summarised call), then calls ``wrap(target, name, entered)``
        in place of *target*, then writes the outcome. ``entered.on`` is
        set (a thread-local) when the call came through the gateway as the
        program's own: a gateway calls *target* directly for our runtime's
        calls. Every binding recorded calls ``on_bind(obj)`` after it."""
        if self.mode != RECORD:
            raise ValueError("feed_calls needs a System in record mode")
        import threading
        entered = threading.local()
        bind_record = self._bind_record
        record_after, record_error = self._record_after, self._record_error

        def gateway(target, name):
            write = self.writer.write
            summarise = self.summaries.get(name)

            def before(*args, **kwargs):
                if summarise is not None:
                    try:
                        summary = summarise(*args, **kwargs)
                    except Exception:
                        summary = "?"
                    write(CALL, name, fingerprint(*args, **kwargs), ARGS, summary)
                else:
                    write(CALL, name, fingerprint(*args, **kwargs))
                entered.on = True
            return RecordGateway(self.gate, wrap(target, name, entered), before, record_after, record_error)

        def bind(obj, tag, typename, proxy_key=None):
            ref = bind_record(obj, tag, typename, proxy_key)
            on_bind(obj)
            return ref

        self._gateway = gateway
        self._bind_record = bind

    def type_named(self, typename):
        """The patched type of that qualified name, else one among the
        loaded modules (never imports); None if there is none."""
        cls = self._types.get(typename)
        return cls if cls is not None else _resolve_loaded_type(typename)

    def _replay_entry(self, name):
        """The gateway's replay callable. A recorded exception is raised from
        native code (a finished generator's ``throw``) once our frames have
        returned: its traceback holds only the program's frames, as on
        record (a traceback the program formats reads no file of ours)."""
        call = functools.partial(self._replay_call, name)
        if not F.CAPABILITIES.has("clean_tracebacks"):
            return F.partial(_raise_marked, call)
        return F.compose(_UNMARK, call)

    def patch_function(self, fn, name=None):
        """Return the boundary wrapper of *fn* (installing it is the caller's job)."""
        if not callable(fn):
            raise TypeError(f"patch_function needs a callable, got {type(fn).__name__}")
        if name is None:
            name = f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', None) or fn.__name__}"
        return self._gateway(fn, name)

    def patch(self, owner, attr, name=None):
        """Replace ``owner.attr`` by its boundary wrapper; undone by `unpatch_all`."""
        original = owner.__dict__[attr] if attr in getattr(owner, "__dict__", {}) else getattr(owner, attr)
        if name is None:
            prefix = owner.__name__ if hasattr(owner, "__name__") else type(owner).__name__
            name = f"{prefix}.{attr}"
        wrapper = self.patch_function(original, name)
        setattr(owner, attr, wrapper)
        self._undo.append(lambda: setattr(owner, attr, original))
        return wrapper

    def pass_by_value(self, cls):
        """Instances of *cls* a boundary call returns are stored on the tape
        by value (the stream must know how to encode them: see
        ``stream._common.reduce_value``), not proxied."""
        if cls not in self._by_value:
            self._by_value = self._by_value + (cls,)

    def patch_type(self, cls, methods=None, *, constructor=True, name=None):
        """Route *methods* of *cls* (default: its public callables) through
        gateways for instances bound to this System. With *constructor*,
        ``cls.__new__`` is patched: the real allocation always runs, and an
        instance allocated while INTERNAL is bound (``NEW``) at that point in
        record and replay; its ``__init__`` is then an ordinary boundary
        method (recorded; not run on replay)."""
        tname = name or _qualname(cls)
        if methods is None:
            methods = [m for m, v in vars(cls).items()
                       if not m.startswith("_") and callable(v)
                       and not isinstance(v, (staticmethod, classmethod, type))]
        methods = list(methods)
        self._types[tname] = cls
        self._patched_tuple = tuple(self._types.values())
        if constructor:
            if self._patch_new(cls, tname) and "__init__" not in methods \
                    and getattr(cls, "__init__") is not object.__init__:
                methods.append("__init__")
        attrs = {}
        for m in methods:
            real = vars(cls)[m] if m in vars(cls) else getattr(cls, m)
            # Native per call: id(self) in self._bound ? gateway : real.
            attrs[m] = MethodGateway(self._bound, self._gateway(real, f"{tname}.{m}"), real)
        if attrs:
            self._apply_attrs(cls, attrs)
        return cls

    def _patch_new(self, cls, tname) -> bool:
        """Patch ``cls.__new__`` to bind instances allocated while INTERNAL.
        False where CPython does not let us (3.12+ static builtin types)."""
        on_new = self._on_new_record if self.mode == RECORD else self._on_new_replay
        try:
            self._apply_attrs(cls, {"__new__": NewGateway(cls, self.gate, on_new)})
        except TypeError as exc:   # PYVERSIONS: 3.12+ static builtins refuse dunders
            log.debug("retrace: %s: instances are not bound at construction (%s)", tname, exc)
            return False
        return True

    def _apply_attrs(self, cls, attrs):
        patcher = getattr(utils, "patch_type", None)
        if patcher is not None:
            token = patcher(cls, attrs)
            self._undo.append(lambda: utils.unpatch_type(token))
            return
        saved = {k: cls.__dict__[k] for k in attrs if k in cls.__dict__}
        for k, v in attrs.items():
            setattr(cls, k, v)

        def undo():
            for k in attrs:
                if k in saved:
                    setattr(cls, k, saved[k])
                else:
                    delattr(cls, k)
        self._undo.append(undo)

    def on_unpatch(self, undo):
        """Run ``undo()`` at `unpatch_all()`, newest first with this System's
        own patches: the one undo stack of everything patched for this
        System (the installer's patches of the same types land here too)."""
        self._undo.append(undo)

    def unpatch_all(self):
        """Undo every patch made for this System, newest first (a failing
        step is logged; the others still run)."""
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception:  # pragma: no cover - best effort restore
                log.exception("retrace: undo failed")

    # ----------------------------------------------------------- binding
    def _on_new_record(self, obj):
        """NewGateway hook (phase INTERNAL): the program allocated *obj*."""
        gate = self.gate
        gate.phase = DISABLED
        try:
            self._bind_record(obj, NEW, _qualname(type(obj)))
        finally:
            gate.phase = INTERNAL

    def _on_new_replay(self, obj):
        gate = self.gate
        gate.phase = DISABLED
        try:
            tname = _qualname(type(obj))
            index, tag, value = self._read_tagged()
            if tag != NEW or value != tname:
                raise self._diverge(index, _describe_tag(tag, value), f"new {tname} object")
            self._bind_turn(obj)
            self._track(obj, None)
        finally:
            gate.phase = INTERNAL

    def bind(self, obj):
        """Mark an existing object as external (e.g. ``random._inst``): its
        patched methods become boundary calls. Must happen at the same point
        of the program in record and replay."""
        tname = _qualname(type(obj))
        if self.mode == RECORD:
            old = self.gate.swap(DISABLED)
            try:
                self._bind_record(obj, BIND, tname)
            finally:
                self.gate.phase = old
        else:
            old = self.gate.swap(DISABLED)
            try:
                index, tag, value = self._read_tagged()
                if tag != BIND or value != tname:
                    raise self._diverge(index, _describe_tag(tag, value), f"bind of a {tname}")
                self._bind_turn(obj)
                self._track(obj, None)
            finally:
                self.gate.phase = old
        return obj

    def is_bound(self, obj) -> bool:
        return id(obj) in self._bound

    def _bind_record(self, obj, tag, typename, proxy_key=None):
        """Record: write ``tag typename ⟨B⟩`` binding a token for *obj*."""
        if self._pending_unbind:
            self._flush_unbinds()
        token = BindingToken(typename)
        self.writer.write(tag, typename)
        self.writer.bind(token)
        return self._track(obj, token, proxy_key)

    def _track(self, obj, token, proxy_key=None):
        key = id(obj)
        try:
            ref = _BoundRef(obj, self._released, key, token, proxy_key)
        except TypeError:           # no weakref support: held for good
            ref = _StrongRef(obj, key, token)
        self._bound[key] = ref
        return ref

    def _released(self, ref):
        """Weakref callback: a bound object died (it runs inside its dealloc,
        before the address can be reused)."""
        bound = self._bound
        if bound.get(ref.key) is ref:
            del bound[ref.key]
        if ref.proxy_key is not None and self._proxies.get(ref.proxy_key) is ref:
            del self._proxies[ref.proxy_key]
        if ref.token is not None:
            self._unbind(ref.token)

    def _unbind(self, token, _disabled=DISABLED):
        # (DISABLED bound at definition: a weak reference's callback can run
        # during the interpreter's finalization, after this module's globals
        # were cleared — "phase must be an int, got NoneType" at the end of
        # a recorded aiofiles session)
        gate = self.gate
        old = gate.swap(_disabled)
        try:
            self.writer.unbind(token)
        except Exception:
            # The writer is busy on this thread (GC ran inside a write) or
            # closed: retried at the next binding and at finish().
            self._pending_unbind.append(token)
        finally:
            gate.phase = old

    def _flush_unbinds(self):
        pending, self._pending_unbind = self._pending_unbind, []
        for token in pending:
            try:
                self.writer.unbind(token)
            except KeyError:
                pass
            except Exception:
                self._pending_unbind.append(token)

    def _to_tape(self, v, depth=0):
        """*v* as written: bound objects replaced by their tokens."""
        t = type(v)
        if t in _PLAIN:
            return v
        ref = self._bound.get(id(v))
        if ref is not None:
            return ref.token if ref.token is not None else v
        if depth > 100:
            return v
        if t is tuple or t is list or t is set or t is frozenset:
            items = [self._to_tape(x, depth + 1) for x in v]
            return v if all(a is b for a, b in zip(items, v)) else t(items)
        if t is dict:
            items = [(self._to_tape(k, depth + 1), self._to_tape(x, depth + 1)) for k, x in v.items()]
            if all(a is k and b is x for (a, b), (k, x) in zip(items, v.items())):
                return v
            return dict(items)
        return v

    # --------------------------------------------------------- callbacks
    def callback(self, fn, name=None):
        """Wrap a user function handed to external code. Made while INTERNAL,
        the wrapper is bound (a ``CALLBACK_DEF`` event), and each call by
        external code during a recorded call is recorded and re-run at the
        same point on replay. Otherwise it just calls *fn*."""
        if name is None:
            name = f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', None) or type(fn).__name__}"
        cb = Callback(self, fn, name)
        if self.gate.phase != INTERNAL:
            return cb
        old = self.gate.swap(DISABLED)
        try:
            if self.mode == RECORD:
                self._bind_record(cb, CALLBACK_DEF, name)
            else:
                index, tag, value = self._read_tagged()
                if tag != CALLBACK_DEF or value != name:
                    raise self._diverge(index, _describe_tag(tag, value), f"callback {name} handed out")
                self._bind_turn(cb)
                self._track(cb, None)
            cb._bound = True
        finally:
            self.gate.phase = old
        return cb

    def _record_callback(self, cb, args, kwargs):
        gate = self.gate
        gate.phase = DISABLED
        try:
            # The enclosing recorded call's CALL must precede the callback.
            flush_pending_calls()
            args = self._externalize(args)
            kwargs = self._externalize(kwargs)
            self.writer.write(CALLBACK, self._to_tape(cb), self._to_tape(args), self._to_tape(kwargs))
        finally:
            gate.phase = INTERNAL
        return self._run_recorded_callback(cb.fn, *args, **kwargs)

    def _run_recorded_callback(self, fn, *args, **kwargs):
        """Record, after a callback's head (CALLBACK, WARNING) was written,
        phase INTERNAL: run *fn* (what it does is recorded), then write
        ``CALLBACK_RESULT`` or ``CALLBACK_ERROR`` and go back to the
        enclosing call (phase EXTERNAL)."""
        gate = self.gate
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            gate.phase = DISABLED
            try:
                self.writer.write(CALLBACK_ERROR, exc)
            finally:
                gate.phase = EXTERNAL
            raise
        gate.phase = DISABLED
        try:
            self.writer.write(CALLBACK_RESULT)
        finally:
            gate.phase = EXTERNAL
        return result

    def _replay_callback(self, cb, args, kwargs, index):
        if not isinstance(cb, Callback):
            raise self._diverge(index, "a callback", _summary(cb))
        gate = self.gate
        gate.phase = INTERNAL
        raised = None
        try:
            cb.fn(*args, **kwargs)
        except ReplayDivergence:
            raise
        except BaseException as exc:   # external code saw it; its reaction is on the tape
            raised = exc
        finally:
            gate.phase = DISABLED
        index, tag, value = self._read_tagged(outcome=True)
        if tag == CALLBACK_RESULT:
            if raised is not None:
                raise self._diverge(index, f"callback {cb.name} to return",
                                    f"it raised {_describe_exc(raised)}")
            return
        if tag == CALLBACK_ERROR:
            if raised is None:
                raise self._diverge(index, f"callback {cb.name} to raise {_describe_exc(value)}",
                                    "it returned")
            if type(raised) is not type(value):
                raise self._diverge(index, f"callback {cb.name} to raise {_describe_exc(value)}",
                                    f"it raised {_describe_exc(raised)}")
            return
        raise self._diverge(index, _describe_tag(tag, value), f"return from callback {cb.name}")

    # ---------------------------------------------------------- warnings
    def warnings_hook(self, show):
        """The replacement for ``warnings._showwarnmsg`` (install puts it in
        place; *show* is the original). The warnings machinery calls it for
        every warning its filters let through. A warning shown while this
        thread is inside a recorded call (phase EXTERNAL: the real function
        warned) is written as ``WARNING category message filename lineno
        module`` and shown like a callback (phase INTERNAL: what the
        program's ``showwarning`` does is recorded), then ``CALLBACK_RESULT``
        / ``CALLBACK_ERROR``. On replay the call does not run; the engine
        issues the warning again at that point (`_replay_warning`), through
        the program's filters, so it is shown (or raised) as on record."""
        gate = self.gate
        if self.mode == RECORD:
            def _showwarnmsg(msg):
                if gate.phase == EXTERNAL:
                    return self._record_warning(show, msg)
                return show(msg)
        else:
            counter = self._warnings_shown

            def _showwarnmsg(msg):
                counter.n = getattr(counter, "n", 0) + 1
                return show(msg)
        functools.update_wrapper(_showwarnmsg, show)
        return _showwarnmsg

    def _record_warning(self, show, msg):
        gate = self.gate
        gate.phase = DISABLED
        try:
            # The enclosing recorded call's CALL must precede the warning.
            flush_pending_calls()
            category = msg.category
            catname = _qualname(category) if isinstance(category, type) else str(category)
            filename, lineno = msg.filename, msg.lineno
            self.writer.write(WARNING, catname, str(msg.message), str(filename),
                              lineno if type(lineno) is int else 0, _warning_module(filename, lineno))
        finally:
            gate.phase = INTERNAL
        self._run_recorded_callback(show, msg)

    def _replay_warning(self, catname, index):
        """``WARNING catname …`` read: issue the warning again at this point
        (the recorded call's real function warned), through the program's
        warnings machinery: its filters, registries and ``showwarning`` run
        live, as on record. The category is looked up among the Warning
        subclasses already loaded (nothing is imported or run from the
        recording)."""
        text = self._read_turn()
        filename = self._read_turn()
        lineno = self._read_turn()
        module = self._read_turn()
        category = _warning_category(catname) if isinstance(catname, str) else None
        if category is None:
            raise self._diverge(index, f"warning {_summary(catname)}",
                                "no Warning subclass of that name is loaded")
        if not isinstance(text, str) or not isinstance(filename, str) or type(lineno) is not int:
            raise self._diverge(index, f"warning {catname}({_summary(text)})", "a malformed warning")
        filename, module, registry = _warning_site(filename, module)
        counter = self._warnings_shown
        before = getattr(counter, "n", 0)
        gate = self.gate
        gate.phase = INTERNAL
        raised = None
        try:
            _warn_explicit(text, category, filename, lineno, module, registry)
        except ReplayDivergence:
            raise
        except BaseException as exc:   # on record it went into the real function
            raised = exc
        finally:
            gate.phase = DISABLED
        what = f"warning {catname}({_summary(text)})"
        if raised is None and getattr(counter, "n", 0) == before:
            raise self._diverge(index, f"{what} shown", "the program's warning filters did not show it")
        index, tag, value = self._read_tagged(outcome=True)
        if tag == CALLBACK_RESULT:
            if raised is not None:
                raise self._diverge(index, f"{what} shown", f"showing it raised {_describe_exc(raised)}")
            return
        if tag == CALLBACK_ERROR:
            if raised is None or type(raised) is not type(value):
                got = "it was shown" if raised is None else f"it raised {_describe_exc(raised)}"
                raise self._diverge(index, f"{what} to raise {_describe_exc(value)}", got)
            return
        raise self._diverge(index, _describe_tag(tag, value), f"the end of {what}")

    # ------------------------------------------------------------ record
    def _record_result(self, result):
        if type(result) in _PLAIN:
            self.writer.write(RESULT, result)
            return result
        gate = self.gate
        old = gate.swap(DISABLED)
        try:
            result = self._externalize(result)
            self.writer.write(RESULT, self._to_tape(result))
        finally:
            gate.phase = old
        return result

    def _externalize(self, v, depth=0):
        """The value the program gets (and the tape holds) for *v*: bound
        objects stay, new instances of patched types are bound (``NEW``),
        other untransportable objects become bound `ExternalObject` proxies."""
        t = type(v)
        if t in _PLAIN or id(v) in self._bound:
            return v
        if t is tuple or t is list or t is set or t is frozenset:
            items = [self._externalize(x, depth + 1) for x in v]
            return v if all(a is b for a, b in zip(items, v)) else t(items)
        if t is dict:
            items = {self._externalize(k, depth + 1): self._externalize(x, depth + 1) for k, x in v.items()}
            return v if all(a is b for a, b in zip(items.values(), v.values())) else items
        if self._patched_tuple and isinstance(v, self._patched_tuple):
            self._bind_record(v, NEW, _qualname(t))
            return v
        if isinstance(v, BaseException) or is_structseq(v) or isinstance(v, self._by_value):
            return v
        for base in _SCALAR_BASES:
            if isinstance(v, base):
                # The tape stores the base value; record hands out the same
                # thing replay will.
                return base(v)
        ref = self._proxies.get(id(v))
        proxy = ref() if ref is not None else None
        if proxy is not None:
            return proxy
        # The proxy holds its target; the System holds the proxy weakly, so
        # both go (BINDING_DELETE) when the program drops the proxy.
        proxy = self._external_type.__new__(self._external_type)
        object.__setattr__(proxy, "_retrace_target", v)
        object.__setattr__(proxy, "_retrace_typename", _qualname(t))
        self._proxies[id(v)] = self._bind_record(proxy, NEW, _EXTERNAL_PREFIX + _qualname(t), proxy_key=id(v))
        return proxy

    # ------------------------------------------------------------ replay
    def _replay_call(self, name, /, *args, **kwargs):
        gate = self.gate
        old = gate.swap(DISABLED)
        try:
            return self._replay(name, args, kwargs)
        finally:
            gate.phase = old

    def _check_failed(self):
        if self.divergence is not None:
            raise _copy_divergence(self.divergence)

    def take_turn(self, what=None):
        """Wait until the head of the tape is this thread's; return the
        sequencer, whose ``release()`` the caller must call (try/finally).
        The one place a replaying thread takes its turn: a failed replay,
        a deadlock and another thread's divergence all surface here as
        this thread's `ReplayDivergence`."""
        self._check_failed()
        if self.before_turn is not None:
            # An asynchronous event (install/signals.py) this thread had to
            # reach before its next event: it did not.
            self.before_turn(what)
        seq = self._sequencer
        while True:
            try:
                seq.acquire(what)
            except Deadlock as dead:
                raise self._deadlock(dead) from None
            except ReplayDivergence as div:
                raise _copy_divergence(div) from None
            special = self.special_events
            if special is None:
                return seq
            # An event that is not the caller's but happens at this point
            # of this thread (a garbage collection, install/gc_points.py):
            # consumed in the turn, run after it, then the turn again.
            try:
                run = special(self)
            except BaseException:
                seq.release()
                raise
            if run is None:
                return seq
            seq.release()
            run()
            self._check_failed()

    def _read_tagged(self, outcome=False):
        """Read a tag and its first operand in one turn: (index, tag, value)."""
        seq = self.take_turn()
        try:
            reader = self.reader
            index = event_index(reader)
            try:
                tag = reader.read()
            except EOFError:
                return index, None, None
            if tag == CALLBACK_RESULT:     # the tag without operand
                return index, tag, None
            try:
                value = reader.read()
            except EOFError:
                return index, tag, _EOF
            return index, tag, value
        finally:
            seq.release()

    def _read_turn(self):
        seq = self.take_turn()
        try:
            return self.reader.read()
        finally:
            seq.release()

    def _bind_turn(self, obj):
        seq = self.take_turn()
        try:
            self.reader.bind(obj)
        finally:
            seq.release()

    def _replay(self, name, args, kwargs):
        reader = self.reader
        seq = self.take_turn()
        recorded_stack = None
        try:
            index = event_index(reader)
            try:
                tag = reader.read()
            except EOFError:
                raise self._diverge(index, "end of recording",
                                    f"call {describe_call(name, args, kwargs)}") from None
            if tag != CALL:
                raise self._diverge(index, _describe_tag(tag, _peek_operand(reader)),
                                    f"call {describe_call(name, args, kwargs)}")
            rname = reader.read()
            rfp = reader.read()
            if rname != name or (rfp != fingerprint(*args, **kwargs)
                                 and not (self.fingerprint_exempt and self.fingerprint_exempt(args, kwargs))):
                rsummary = None
                if reader.thread in (None, self._thread_id()):
                    try:
                        item = reader.read()
                        if item == ARGS:
                            rsummary = reader.read()
                            item = reader.read()
                        if item == STACK:
                            recorded_stack = reader.read()
                    except Exception:   # end of tape, a binding: no stack to show
                        pass
                actual = describe_call(name, args, kwargs)
                if rname == name and rsummary is None:
                    actual += f" (args fingerprint {fingerprint(*args, **kwargs):#010x})"
                raise self._diverge(index, f"call {_describe_recorded(rname, rfp, rsummary)}",
                                    f"call {actual}", recorded_stack)
            # Fast path: the outcome usually follows at once on this thread;
            # take it in the same turn instead of queueing for another.
            pending = None
            if reader.next_kind == "value" and reader.thread == self._thread_id():
                oindex = event_index(reader)
                otag = reader.read()
                if otag == CALLBACK_RESULT:
                    pending = (oindex, otag, None)
                else:
                    try:
                        pending = (oindex, otag, reader.read())
                    except EOFError:
                        pending = (oindex, otag, _EOF)
        finally:
            seq.release()
        if pending is not None:
            if pending[1] == RESULT:
                return pending[2]
            if pending[1] == ERROR:
                # Raised by the gateway's native unwrapping (_replay_entry),
                # after this frame is gone: no cycle through it keeps frames
                # alive until a GC run (finalizers would run off their
                # recorded points), and no frame of ours in the traceback.
                return _Raised(pending[2])
        # The outcome, possibly after other threads' events (the real call
        # blocked) and after callbacks the external code made.
        while True:
            if pending is not None:
                (index, tag, value), pending = pending, None
            else:
                index, tag, value = self._read_tagged(outcome=True)
            if tag == RESULT:
                return value
            if tag == ERROR:
                return _Raised(value)      # raised natively (see above)
            if tag == NEW:
                stub = self._make_stub(value, index)
                self._bind_turn(stub)
                self._track(stub, None)
            elif tag == STACK or tag == ARGS:
                continue
            elif tag == CALLBACK:
                cb = value
                cargs = self._read_turn()
                ckwargs = self._read_turn()
                self._replay_callback(cb, cargs, ckwargs, index)
            elif tag == WARNING:
                self._replay_warning(value, index)
            else:
                raise self._diverge(index, _describe_tag(tag, value),
                                    f"outcome of call {describe_call(name, args, kwargs)}")

    def _make_stub(self, typename, index):
        if not isinstance(typename, str):
            raise self._diverge(index, f"NEW {_summary(typename)}", "a type name")
        if typename.startswith(_EXTERNAL_PREFIX):
            proxy = self._external_type.__new__(self._external_type)
            object.__setattr__(proxy, "_retrace_typename", typename[len(_EXTERNAL_PREFIX):])
            return proxy
        cls = self.type_named(typename)
        if cls is None:
            raise self._diverge(index, f"a new {typename} object", "no patched type of that name")
        return self.stub_factory.create(cls)

    # -------------------------------------------------------- divergence
    def _diverge(self, index, expected, actual, recorded_stack=None):
        stack = capture_stack()
        where = _where(stack)
        message = f"replay diverged at event {index}: expected {expected}, got {actual} ({where})"
        if recorded_stack:
            message += "\nrecorded at:\n" + "".join(
                f"  {f}:{l} in {n}\n" for f, l, n in recorded_stack)
        if stack:
            message += "\nreplaying at:\n" + "".join(f"  {f}:{l} in {n}\n" for f, l, n in stack[-8:])
        div = ReplayDivergence(message)
        div.event_index = index
        div.expected = expected
        div.actual = actual
        div.stack = stack
        div.recorded_stack = tuple(tuple(f) for f in recorded_stack) if recorded_stack else None
        if self.divergence is None:
            self.divergence = div
            if self._sequencer is not None:
                self._sequencer.fail(div)
        return div

    describe_tag = staticmethod(lambda tag, value: _describe_tag(tag, value))

    def _describe_head(self):
        """Consume the event at the head of the tape and name it."""
        reader = self.reader
        tag = reader.read()
        value = _peek_operand(reader)
        return _describe_tag(tag, value)

    def diverge(self, index, expected, actual, recorded_stack=None):
        """The `ReplayDivergence` for event *index* (the first one is kept as
        ``self.divergence``); the caller raises it."""
        return self._diverge(index, expected, actual, recorded_stack)

    def deadlock(self, dead):
        """The `ReplayDivergence` for a sequencer's `Deadlock` *dead*."""
        return self._deadlock(dead)

    def _deadlock(self, dead):
        finished = ", ".join(f"thread {t}" for t in sorted(dead.finished, key=repr))
        where = f"; finished: {finished}" if finished else ""
        expected = ("more events after the end of the recording" if dead.at_end
                    else f"thread {dead.head} to take the next event"
                    + (f" ({dead.next_event})" if dead.next_event else ""))
        return self._diverge(
            event_index(self.reader), expected,
            f"a deadlock: {dead.describe()}{where}")

    def finish(self):
        """End of the program. Record: flush. Replay: the tape must be used
        up (else a divergence naming the first missing event)."""
        if self.mode == RECORD:
            if self._pending_unbind:
                self._flush_unbinds()
            self.writer.flush()
            return
        self._check_failed()
        reader = self.reader
        old = self.gate.swap(DISABLED)
        try:
            index = event_index(reader)
            thread = reader.thread
            try:
                tag = reader.read()
            except EOFError:
                return
            value = _peek_operand(reader)
            if tag == CALL:
                try:
                    fp = reader.read()
                except EOFError:
                    fp = None
                expected = f"call {_describe_recorded(value, fp)}"
            else:
                expected = _describe_tag(tag, value)
            if thread is not None:
                expected += f" (thread {thread})"
            raise self._diverge(index, expected, "end of replay")
        finally:
            self.gate.phase = old


class _Raised:
    """A recorded exception `_replay` hands back for the gateway to raise."""

    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc


def _finished_generator():
    yield


_DONE = _finished_generator()
_DONE.close()
# throw() on a finished generator raises its argument from C: no frame added.
_UNMARK = F.if_then_else(F.isinstance_of(_Raised),
                         F.compose(_DONE.throw, __import__("operator").attrgetter("exc")), F.identity)


def _raise_marked(call, *args, **kwargs):
    """Python backend: the gateway is Python too, so frames of ours stay."""
    result = call(*args, **kwargs)
    if type(result) is _Raised:
        exc, result = result.exc, None
        try:
            raise exc
        finally:
            exc = None
    return result


class _Eof:
    def __repr__(self):
        return "<end of recording>"


_EOF = _Eof()


def _peek_operand(reader):
    try:
        return reader.read()
    except Exception:
        return _EOF


def _describe_tag(tag, value) -> str:
    if tag is None:
        return "end of recording"
    if tag == CALL:
        return f"call {value}"
    if tag == ERROR and isinstance(value, BaseException):
        return f"error {_describe_exc(value)}"
    if tag in (RESULT, ERROR):
        return f"{tag.lower()} {_summary(value)}"
    if tag == CALLBACK:
        return f"callback {getattr(value, 'name', _summary(value))}"
    if tag == CALLBACK_DEF:
        return f"callback {value} handed out"
    if tag == BIND:
        return f"bind of a {value}"
    if tag == NEW:
        return f"new {value} object"
    if tag == CALLBACK_RESULT:
        return "return from a callback"
    if tag in ("GC", "GC_VALVE"):      # install/gc_points.py
        return (f"a garbage collection (generation {_summary(value)})" if tag == "GC" else
                f"a garbage collection the interpreter ran between events (generation {_summary(value)})")
    if tag == "GC_DONE":
        return f"the end of a garbage collection (that freed {_summary(value)} objects)"
    if tag == "SYNC":
        return f"a sync point (lock acquire, join, is_alive) that returned {_summary(value)}"
    return f"{tag} {_summary(value)}"


def _copy_divergence(div):
    copy = ReplayDivergence(*div.args)
    copy.__dict__.update(div.__dict__)
    return copy


def _resolve_loaded_type(typename):
    """A type by qualified name among *loaded* modules (never imports)."""
    module_name, _, qual = typename.rpartition(".")
    while module_name:
        module = sys.modules.get(module_name)
        if module is not None:
            obj = module
            for part in qual.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            if isinstance(obj, type):
                return obj
        module_name, _, head = module_name.rpartition(".")
        qual = f"{head}.{qual}"
    return None


# ---------------------------------------------------------------- warnings
_warn_explicit = warnings.warn_explicit    # private reference (the program may replace warnings')


def _warning_module(filename, lineno):
    """The ``__name__`` of the frame the warnings machinery attributed a
    warning to (the innermost frame at *filename*:*lineno*), else None."""
    f = sys._getframe(2)
    while f is not None:
        if f.f_code.co_filename == filename and f.f_lineno == lineno:
            name = f.f_globals.get("__name__")
            return name if isinstance(name, str) else None
        f = f.f_back
    return None


def _warning_site(filename, module):
    """(filename, module, registry) to issue a replayed warning with: the
    registry of the live frame (innermost first, not ours) of that module
    and file name, else of the loaded module of that name, as the warnings
    machinery uses on record; the frame's file name when the program runs
    from another directory than on record."""
    base = os.path.basename(filename)
    f = sys._getframe(2)
    g = None
    while f is not None:
        code_file = f.f_code.co_filename
        if not _machinery_frame(code_file) and f.f_globals.get("__name__") == module \
                and os.path.basename(code_file) == base:
            g, filename = f.f_globals, code_file
            break
        f = f.f_back
    if g is None and isinstance(module, str):
        mod = sys.modules.get(module)
        g = getattr(mod, "__dict__", None) if mod is not None else None
    if not isinstance(module, str):
        module = "<string>"
    if not isinstance(g, dict):
        return filename, module, None
    registry = g.get("__warningregistry__")
    if registry is None:
        registry = g["__warningregistry__"] = {}
    return filename, module, registry


def _warning_category(name):
    """The loaded Warning subclass of qualified name *name* (``builtins.
    DeprecationWarning``), found by walking Warning's subclasses; None if
    there is none."""
    seen = set()
    todo = [Warning]
    while todo:
        cls = todo.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        try:
            if f"{cls.__module__}.{cls.__qualname__}" == name:
                return cls
        except Exception:
            pass
        try:
            todo.extend(type.__subclasses__(cls))
        except TypeError:
            pass
    return None
