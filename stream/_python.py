"""Pure-Python backend of retracesoftware.stream (uses the ``msgpack`` package).

Writes exactly the bytes the C++ ``_stream`` backend writes (docs/FORMAT.md).
Everything the runtime calls at record time is a private reference taken here
at import, so an installer that later patches ``os``, ``time``, ``_thread`` or
``threading`` never sees our own calls (DESIGN §3).
"""
from __future__ import annotations

import os as _os
import weakref as _weakref
from _thread import allocate_lock as _allocate_lock, start_new_thread as _start_new_thread, \
    get_ident as _get_ident, RLock as _RLock
from time import monotonic as _monotonic

try:
    from _signal import SIG_BLOCK as _SIG_BLOCK, SIG_SETMASK as _SIG_SETMASK, \
        pthread_sigmask as _pthread_sigmask, valid_signals as _valid_signals
    _ALL_SIGNALS = _valid_signals()
except ImportError:  # pragma: no cover - platforms without pthread_sigmask
    _pthread_sigmask = None


def _start_blocked(fn, args):
    """Start our thread with every signal blocked from birth (see the C++
    writer's BlockAllSignals): a signal the program blocks on its own
    threads must never be delivered to ours."""
    if _pthread_sigmask is None:
        return _start_new_thread(fn, args)
    old = _pthread_sigmask(_SIG_BLOCK, _ALL_SIGNALS)
    try:
        return _start_new_thread(fn, args)
    finally:
        _pthread_sigmask(_SIG_SETMASK, old)

import msgpack as _msgpack

from retracesoftware.utils.errors import RecordingError, RecordingFormatError
from retracesoftware.stream import _common as C
from retracesoftware.stream import _zstd
from retracesoftware.stream._common import StreamPosition, UnknownRecordedException  # noqa: F401
from retracesoftware.utils.isolate import isolate_module

# Private copies taken at import, before any patch (utils/isolate.py).
_real_os = isolate_module(_os)
_create = C.create_recording

_ExtType = _msgpack.ExtType
_FRAME = C.FRAME_HEADER
_crc32 = C.crc32
_index_bytes = C.index_bytes

__all__ = ["StreamWriter", "StreamReader", "RecordingFormatError", "StreamPosition",
           "UnknownRecordedException"]


class _Unrecordable(Exception):
    """Raised inside the encoder; carries the value and its path outward."""

    def __init__(self, value):
        self.value = value
        self.path = []


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = _real_os.write(fd, view)
        view = view[n:]


class _Encoder:
    """Value → msgpack bytes, with interning, bindings and hooks.

    Traversal order and every encoding choice mirror stream/cpp/encoder.hpp.
    """

    def __init__(self, intern=True):
        self.packer = _msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass",
                                      autoreset=True)
        self.intern_on = intern
        self.strings = {}       # str -> encoded STR_REF (bytes)
        self.string_list = []   # index -> str (for rollback)
        self.bindings = {}      # id(obj) -> (index, obj, encoded HANDLE bytes)
        self.next_binding = 0
        self.hooks = {}         # type -> (name, to_state)

    def ext(self, code, data):
        return self.packer.pack(_ExtType(code, bytes(data)))

    def rollback_strings(self, count):
        strings = self.strings
        lst = self.string_list
        while len(lst) > count:
            del strings[lst.pop()]

    def encode(self, v, out):
        t = type(v)
        pack = self.packer.pack
        if t is str:
            if self.intern_on and C.INTERN_MIN <= len(v) <= C.INTERN_MAX:
                ref = self.strings.get(v)
                if ref is not None:
                    out += ref
                    return
                if len(self.string_list) < C.INTERN_LIMIT:
                    self.strings[v] = self.ext(C.EXT_STR_REF, _index_bytes(len(self.string_list)))
                    self.string_list.append(v)
                    out += self.ext(C.EXT_STR_DEF, v.encode("utf-8", "surrogatepass"))
                    return
            out += pack(v)
        elif t is int:
            if C.INT_MIN <= v <= C.INT_MAX:
                out += pack(v)
            else:
                out += self.ext(C.EXT_BIGINT, C.bigint_bytes(v))
        elif t is float or t is bool or v is None or t is bytes:
            out += pack(v)
        else:
            b = self.bindings.get(id(v))
            if b is not None:
                out += b[2]
            elif t is tuple:
                out += self.ext(C.EXT_TUPLE, self.encode_array(v))
            elif t is list:
                out += self.encode_array(v)
            elif t is dict:
                out += self.packer.pack_map_header(len(v))
                for k, item in v.items():
                    try:
                        self.encode(k, out)
                    except _Unrecordable as e:
                        e.path.append(f"<key {k!r}>")
                        raise
                    try:
                        self.encode(item, out)
                    except _Unrecordable as e:
                        e.path.append(f"[{k!r}]")
                        raise
            elif t is set:
                out += self.ext(C.EXT_SET, self.encode_array(v))
            elif t is frozenset:
                out += self.ext(C.EXT_FROZENSET, self.encode_array(v))
            else:
                hook = self.hooks.get(t)
                if hook is not None:
                    name, to_state = hook
                    state = to_state(v)
                    data = bytearray()
                    data += self.packer.pack_array_header(2)
                    self.encode(name, data)
                    try:
                        self.encode(state, data)
                    except _Unrecordable as e:
                        e.path.append(f"<{name}>")
                        raise
                    out += self.ext(C.EXT_HOOK, data)
                    return
                reduced = C.reduce_value(v)
                if reduced is None:
                    raise _Unrecordable(v)
                code, payload = reduced
                if code == 0:
                    self.encode(payload, out)
                    return
                data = bytearray()
                try:
                    self.encode(payload, data)
                except _Unrecordable as e:
                    e.path.append(f"<{payload[0]}>")
                    raise
                out += self.ext(code, data)

    def encode_array(self, seq):
        data = bytearray(self.packer.pack_array_header(len(seq)))
        i = 0
        for item in seq:
            try:
                self.encode(item, data)
            except _Unrecordable as e:
                e.path.append(f"[{i}]")
                raise
            i += 1
        return data

    def encode_top(self, v, out):
        try:
            self.encode(v, out)
        except _Unrecordable as e:
            raise C.unrecordable(e.value, e.path) from None


class StreamWriter:
    """Appends events to a recording file; see docs/FORMAT.md and stream/README.md."""

    def __init__(self, path, preamble, *, thread_id=None, flush_interval=0.1,
                 buffer_size=1 << 16, compress=True, cache_thread_id=False):
        if type(preamble) is not dict:
            raise TypeError(f"preamble must be a dict, not {C.type_name(type(preamble))}")
        if thread_id is not None and not callable(thread_id):
            raise TypeError("thread_id must be callable or None")
        flush_interval = float(flush_interval)
        if not flush_interval > 0:
            raise ValueError("flush_interval must be > 0 seconds")
        buffer_size = int(buffer_size)
        if buffer_size <= 0:
            raise ValueError("buffer_size must be > 0 bytes")
        self.path = _real_os.fspath(path)
        self._thread_id = thread_id
        # The C++ writer caches thread_id() per thread (until
        # thread_ids_changed()); asking every time writes the same bytes.
        self._cache_thread_id = bool(cache_thread_id)
        self._flush_interval = flush_interval
        self._buffer_size = buffer_size
        self._compress = bool(compress)
        self._zc = _zstd.Compressor()      # used under _io_lock
        self._enc = _Encoder()
        self._buf = bytearray()
        self._events = 0
        self._last_thread = None
        self._has_thread = False
        self._lock = _allocate_lock()      # guards _buf, _enc, counters
        self._io_lock = _allocate_lock()   # orders frames on disk
        self._wake = _allocate_lock()
        self._wake.acquire()
        self._owner = None
        self._closed = False
        self._forked = False
        self._error = None
        self._pid = _real_os.getpid()
        self._fd = -1
        self._failed = False   # a frame could not be written: later frames are dropped
        self._written = 0      # bytes of whole frames on disk

        pre = bytearray()
        _Encoder(intern=False).encode_top(preamble, pre)
        fd = _create(self.path)
        try:
            _real_os.fchmod(fd, 0o600)
            _write_all(fd, C.HEADER + _FRAME.pack(len(pre), _crc32(pre)) + pre)
        except BaseException:
            _real_os.close(fd)
            raise
        self._fd = fd
        self._written = len(C.HEADER) + _FRAME.size + len(pre)
        C.track_writer(self)
        self._flusher_running = True
        self._flusher_done = _allocate_lock()
        self._flusher_done.acquire()
        self._flusher_ident = _start_blocked(
            StreamWriter._flusher,
            (_weakref.ref(self), self._wake, self._flusher_done, flush_interval))

    # -------------------------------------------------------------- state
    @property
    def events(self) -> int:
        return self._events

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failed(self) -> bool:
        """True once a frame could not be written (disk full, I/O error):
        from then on events are dropped, the file keeps the whole frames
        written before."""
        return self._failed

    @property
    def pid(self) -> int:
        """The process this writer belongs to."""
        return self._pid

    @property
    def forked(self) -> bool:
        """True in a forked child: this writer is the parent's and unusable here."""
        return self._forked

    def _check(self):
        if self._forked:
            raise C.forked_error(self._pid)
        if self._closed:
            raise ValueError("StreamWriter is closed")
        if self._error is not None:
            err, self._error = self._error, None
            raise RecordingError(f"writing {self.path} failed: {err}") from err

    def let_go(self):
        """Called from ``thread_id`` by a thread that will never return (it
        parks until the process exits): the lock this writer holds while it
        asks is released, the write never happens. (The C++ writer asks
        before taking its lock and has no such method.)"""
        if self._owner == _get_ident():
            self._owner = None
            self._lock.release()

    def _enter(self):
        me = _get_ident()
        if self._owner == me:
            raise RuntimeError("StreamWriter used re-entrantly (from a hook or thread_id "
                               "called by this same write)")
        self._lock.acquire()
        self._owner = me

    def _leave(self):
        self._owner = None
        self._lock.release()

    # ------------------------------------------------------------ writing
    def _switch(self, out):
        tid = self._thread_id()
        if not self._has_thread or tid != self._last_thread:
            data = bytearray()
            self._enc.encode_top(tid, data)
            out += self._enc.ext(C.EXT_THREAD_SWITCH, data)
            self._last_thread = tid
            self._has_thread = True
            return 1
        return 0

    def write(self, *values):
        """Append each value as one event (atomically: all or none)."""
        if self._forked or self._closed or self._error is not None:
            self._check()
        me = _get_ident()
        if self._owner == me:
            raise RuntimeError("StreamWriter used re-entrantly (from a hook or thread_id "
                               "called by this same write)")
        lock = self._lock
        lock.acquire()
        self._owner = me
        buf = self._buf
        start = len(buf)
        enc = self._enc
        nstrings = len(enc.string_list)
        last = (self._has_thread, self._last_thread)
        try:
            n = self._switch(buf) if self._thread_id is not None else 0
            encode = enc.encode
            for v in values:
                encode(v, buf)
            self._events += n + len(values)
        except _Unrecordable as e:
            del buf[start:]
            enc.rollback_strings(nstrings)
            self._has_thread, self._last_thread = last
            raise C.unrecordable(e.value, e.path) from None
        except BaseException:
            del buf[start:]
            enc.rollback_strings(nstrings)
            self._has_thread, self._last_thread = last
            raise
        finally:
            self._owner = None
            lock.release()
        if len(buf) >= self._buffer_size:
            self._signal()

    def bind(self, obj):
        """Emit NEW_BINDING; later writes of *obj* encode as a handle."""
        t = type(obj)
        if obj is None or t in (bool, int, float, str, bytes):
            raise TypeError(f"cannot bind a value of immutable type {t.__name__}")
        self._check()
        self._enter()
        buf = self._buf
        start = len(buf)
        last = (self._has_thread, self._last_thread)
        try:
            if id(obj) in self._enc.bindings:
                raise ValueError(f"{C.type_name(t)} object is already bound")
            n = self._switch(buf) if self._thread_id is not None else 0
            buf += self._enc.ext(C.EXT_NEW_BINDING, b"")
            idx = self._enc.next_binding
            self._enc.bindings[id(obj)] = (idx, obj, self._enc.ext(C.EXT_HANDLE, _index_bytes(idx)))
            self._enc.next_binding += 1
            self._events += n + 1
        except BaseException:
            del buf[start:]
            self._has_thread, self._last_thread = last
            raise
        finally:
            self._leave()

    def unbind(self, obj):
        """Emit BINDING_DELETE for *obj* and release the writer's reference."""
        self._check()
        self._enter()
        try:
            b = self._enc.bindings.pop(id(obj), None)
            if b is None:
                raise KeyError(f"{C.type_name(type(obj))} object is not bound")
            self._buf += self._enc.ext(C.EXT_BINDING_DELETE, _index_bytes(b[0]))
            self._events += 1
        finally:
            self._leave()

    def is_bound(self, obj) -> bool:
        return id(obj) in self._enc.bindings

    def register(self, type_, name, to_state):
        """Record values of exactly *type_* as ``EXT_HOOK [name, to_state(value)]``."""
        if not isinstance(type_, type):
            raise TypeError("register(type, name, to_state): type must be a type")
        if type(name) is not str:
            raise TypeError("register(type, name, to_state): name must be a str")
        if not callable(to_state):
            raise TypeError("register(type, name, to_state): to_state must be callable")
        self._enc.hooks[type_] = (name, to_state)

    # ----------------------------------------------------------- flushing
    def _signal(self):
        if self._wake.locked():
            try:
                self._wake.release()
            except RuntimeError:
                pass

    def _take(self):
        """Swap out the buffer (caller holds _lock) → its bytes or None."""
        buf = self._buf
        if not buf:
            return None
        self._buf = bytearray()
        return buf

    def _frame(self, buf):
        """Frame bytes for the events *buf* (caller holds _io_lock, not
        _lock): compressed here, while the program keeps writing."""
        if self._compress and not self._failed:
            z = self._zc.compress(buf)
            if z is not None and len(z) < len(buf):
                return _FRAME.pack(len(z) | C.FRAME_COMPRESSED, _crc32(z)) + z
        return _FRAME.pack(len(buf), _crc32(buf)) + buf

    @property
    def compress(self) -> bool:
        """True when frames are zstd-compressed (asked for and libzstd loaded)."""
        return self._compress and _zstd.available()

    def _flush_once(self):
        self._lock.acquire()
        try:
            buf = self._take()
            if buf is None:
                # A frame the flusher thread took may still be on its way to
                # the file: flush() returns once it is there (as the C++ one).
                self._io_lock.acquire()
                self._io_lock.release()
                return
            self._io_lock.acquire()
        finally:
            self._lock.release()
        try:
            frame = self._frame(buf)
            if not self._failed:
                _write_all(self._fd, frame)
                self._written += len(frame)
        except OSError as e:
            # Never write a later frame after a lost one (the tape would have
            # a silent hole); cut a partly written frame off, so the file
            # ends cleanly after the last whole frame.
            self._error = e
            self._failed = True
            try:
                _real_os.ftruncate(self._fd, self._written)
            except OSError:
                pass
        finally:
            self._io_lock.release()

    @staticmethod
    def _flusher(ref, wake, done, interval):
        # Holds only a weak reference between rounds, so an unclosed writer
        # can still be collected (its __del__ flushes and closes).
        # Signals are the program's: one it blocks on its own threads (to
        # sigwait for it) must never be delivered to this thread.
        if _pthread_sigmask is not None:
            _pthread_sigmask(_SIG_BLOCK, _ALL_SIGNALS)
        try:
            while True:
                wake.acquire(True, interval)
                w = ref()
                if w is None or not w._flusher_running or w._forked or w._fd < 0:
                    return
                w._flush_once()
                del w
        finally:
            try:
                done.release()
            except RuntimeError:
                pass

    def flush(self):
        """Write everything buffered as one frame, now."""
        self._check()
        if self._owner == _get_ident():
            raise RuntimeError("StreamWriter.flush called re-entrantly")
        self._flush_once()
        self._check()

    def close(self):
        """Flush, stop the background thread, close the file. Idempotent."""
        if self._closed or self._forked:
            self._closed = True
            return
        if self._owner == _get_ident():
            raise RuntimeError("StreamWriter.close called re-entrantly")
        self._flusher_running = False
        self._signal()
        if _get_ident() != self._flusher_ident:  # __del__ may run on the flusher
            self._flusher_done.acquire()
        self._flush_once()
        self._closed = True
        fd, self._fd = self._fd, -1
        if fd >= 0:
            _real_os.close(fd)
        if self._error is not None:
            err, self._error = self._error, None
            raise RecordingError(f"writing {self.path} failed: {err}") from err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if not self._closed and not self._forked and self._fd >= 0:
                self.close()
        except Exception:
            pass

    # ----------------------------------------------------------------- fork
    def _forked_child(self):
        """Called in a fork child (via os.register_at_fork): the buffered
        events are the parent's, which writes them; this copy is dropped."""
        if self._pid == _real_os.getpid():
            return
        self._forked = True
        self._buf = bytearray()
        self._owner = None
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                _real_os.close(fd)
            except OSError:
                pass

    def reopen(self, path, preamble):
        """In a forked child: continue *this* writer on a new file *path*.

        Everything that holds the writer (or its bound methods) keeps working.
        The new file gets its own header and *preamble*, a fresh intern table
        and thread state; the objects still bound stay bound: the file starts
        with one NEW_BINDING per live binding, in binding order (new indices
        0..k-1). Returns k. Only valid in a forked child (``forked``)."""
        if not self._forked:
            raise RecordingError("StreamWriter.reopen is for a forked child; this writer "
                                 "belongs to this process")
        if type(preamble) is not dict:
            raise TypeError(f"preamble must be a dict, not {C.type_name(type(preamble))}")
        live = sorted(self._enc.bindings.values(), key=lambda b: b[0])
        enc = _Encoder()
        enc.hooks = self._enc.hooks
        out = bytearray()
        for i, (_, obj, _) in enumerate(live):
            out += enc.ext(C.EXT_NEW_BINDING, b"")
            enc.bindings[id(obj)] = (i, obj, enc.ext(C.EXT_HANDLE, _index_bytes(i)))
        enc.next_binding = len(live)
        pre = bytearray()
        _Encoder(intern=False).encode_top(preamble, pre)
        path = _real_os.fspath(path)
        fd = _create(path)
        try:
            _real_os.fchmod(fd, 0o600)
            _write_all(fd, C.HEADER + _FRAME.pack(len(pre), _crc32(pre)) + pre)
        except BaseException:
            _real_os.close(fd)
            raise
        # The parent's locks may have been held by a thread that does not
        # exist here: fresh ones.
        self._lock = _allocate_lock()
        self._io_lock = _allocate_lock()
        self._wake = _allocate_lock()
        self._wake.acquire()
        self.path = path
        self._enc = enc
        self._buf = out
        self._events = len(live)
        self._last_thread = None
        self._has_thread = False
        self._owner = None
        self._closed = False
        self._error = None
        self._pid = _real_os.getpid()
        self._fd = fd
        self._failed = False
        self._written = len(C.HEADER) + _FRAME.size + len(pre)
        self._zc = _zstd.Compressor()
        self._forked = False
        self._flusher_running = True
        self._flusher_done = _allocate_lock()
        self._flusher_done.acquire()
        # The inherited bindings reach the disk now: a child killed before
        # the flusher's first round still leaves a replayable start.
        if out:
            self._flush_once()
        self._flusher_ident = _start_blocked(
            StreamWriter._flusher,
            (_weakref.ref(self), self._wake, self._flusher_done, self._flush_interval))
        return len(live)

    def flush_on_sigterm(self):
        """C++ backend only (a C-level handler and a thread of ours flush
        before the process dies of SIGTERM): here False, nothing armed. A
        Python-level handler would run only when the main thread next runs
        bytecode, never if it is blocked in a C call, and the process would
        then not die of the signal at all."""
        self._check()
        return False

    def child_writer(self, path, preamble):
        """A fresh writer for this (forked) process with the same thread_id,
        flush_interval, buffer_size and hooks."""
        w = type(self)(path, preamble, thread_id=self._thread_id,
                       flush_interval=self._flush_interval, buffer_size=self._buffer_size,
                       compress=self._compress, cache_thread_id=self._cache_thread_id)
        for t, (name, fn) in self._enc.hooks.items():
            w.register(t, name, fn)
        return w


class _File:
    """Sequential reads through private os references (the installer may
    patch builtins.open and io at replay time)."""

    fd = -1                 # close() is safe when the open failed

    def __init__(self, path):
        self.fd = _real_os.open(path, _os.O_RDONLY | getattr(_os, "O_CLOEXEC", 0))
        self.size = _real_os.fstat(self.fd).st_size
        self.pos = 0

    def read(self, n):
        n = max(0, min(n, self.size - self.pos))  # never allocate past the file
        chunks = []
        while n > 0:
            b = _real_os.read(self.fd, n)
            if not b:
                break
            chunks.append(b)
            n -= len(b)
            self.pos += len(b)
        return b"".join(chunks)

    def tell(self):
        return self.pos

    def seek(self, pos):
        _real_os.lseek(self.fd, pos, _os.SEEK_SET)
        self.pos = pos

    def close(self):
        if self.fd >= 0:
            _real_os.close(self.fd)
            self.fd = -1

    __del__ = close


class StreamReader:
    """Reads a recording event by event; see docs/FORMAT.md."""

    def __init__(self, path):
        self.path = _real_os.fspath(path)
        self._f = _File(self.path)
        self._strings = []
        self._bindings = {}
        self._next_binding = 0
        self._hooks = {}
        self._frame = 0
        self._event = 0
        self._thread = None
        self._head = None          # (kind, value, offset) decoded, not consumed
        self._payload = b""
        self._frame_unpacker = None
        self._pos = 0              # position inside _payload
        self._payload_offset = 0   # file offset of _payload[0]
        self._eof = False
        self._error = None
        self._ahead = []           # events decoded by take_call's lookahead, not consumed
        self._scanning = False     # scan(): values are passed over (no hook, binding or rebuild)
        #: tags of asynchronous events (SIGNAL): see _head_is_async
        self.async_tags = None
        #: event indices announcing a later asynchronous event: see async_next
        self.async_marks = None
        # The replay's fast paths (take_call/take_event) run without the
        # sequencer's lock; this keeps two threads out of the decoder (the
        # C++ reader is atomic under the GIL instead).
        self._mutex = _RLock()
        head = self._f.read(C.HEADER_SIZE)
        if len(head) < len(C.MAGIC) or head[:len(C.MAGIC)] != C.MAGIC:
            self._f.close()
            raise C.format_error("bad magic: not a retrace recording", 0, 0, 0,
                                 "check the path; this file was not written by retracesoftware")
        if len(head) < C.HEADER_SIZE:
            self._f.close()
            raise C.format_error("file ends inside the header", len(head), 0, 0,
                                 "the recording is empty; re-record")
        version = int.from_bytes(head[len(C.MAGIC):], "little")
        if not C.OLDEST_READABLE_VERSION <= version <= C.FORMAT_VERSION:
            self._f.close()
            raise C.format_error(
                f"format version {version}, this retracesoftware reads version {C.FORMAT_VERSION}",
                len(C.MAGIC), 0, 0, "use the retracesoftware version that made the recording")
        self._offset = C.HEADER_SIZE  # file offset of the next frame header
        if not self._next_frame(preamble=True):
            self._f.close()
            raise C.format_error("no preamble frame", C.HEADER_SIZE, 0, 0,
                                 "the recording is empty; re-record")
        try:
            unpacker = self._unpacker(self._payload)
            pre = unpacker.unpack()
            if unpacker.tell() != len(self._payload) or type(pre) is not dict:
                raise ValueError("preamble frame is not exactly one map")
        except Exception as e:
            self._f.close()
            raise C.format_error(f"bad preamble ({e})", self._payload_offset, 0, 0,
                                 "the recording is damaged; re-record") from None
        self.preamble = pre
        self._strings = []  # the preamble does not intern
        self._payload = b""
        self._pos = 0

    # --------------------------------------------------------------- frames
    def _next_frame(self, preamble=False):
        """Load the next frame's payload; False at clean EOF; raise on damage."""
        f = self._f
        off = self._offset
        fh = f.read(C.FRAME_HEADER_SIZE)
        if not fh:
            return False
        frame = 0 if preamble else self._frame + 1
        if len(fh) < C.FRAME_HEADER_SIZE:
            raise C.format_error(
                f"torn frame: the file ends {len(fh)} bytes into a frame header",
                off, frame, self._event,
                None if not preamble else "the recording has no complete preamble; re-record")
        length, crc = _FRAME.unpack(fh)
        compressed = not preamble and length & C.FRAME_COMPRESSED
        if compressed:
            length &= ~C.FRAME_COMPRESSED
        payload = f.read(length)
        if len(payload) < length:
            raise C.format_error(
                f"torn frame: {length} byte payload, the file ends after {len(payload)}",
                off, frame, self._event,
                None if not preamble else "the recording has no complete preamble; re-record")
        if _crc32(payload) != crc:
            raise C.format_error("CRC mismatch: the frame's bytes were changed",
                                 off, frame, self._event)
        if compressed:
            try:
                payload = _zstd.decompress(payload)
            except LookupError as e:
                raise C.format_error(str(e), off, frame, self._event,
                                     "install libzstd1 (apt install libzstd1) or "
                                     "pip install zstandard") from None
            except ValueError as e:
                raise C.format_error(f"bad compressed frame ({e})", off, frame,
                                     self._event) from None
        self._frame = frame
        self._payload = payload
        self._frame_unpacker = None
        self._pos = 0
        self._payload_offset = off + C.FRAME_HEADER_SIZE
        self._offset = off + C.FRAME_HEADER_SIZE + length
        return True

    def _unpacker(self, data):
        u = _msgpack.Unpacker(None, ext_hook=self._ext, strict_map_key=False,
                              unicode_errors="surrogatepass", raw=False, use_list=True,
                              max_buffer_size=max(len(data), 1024))
        u.feed(data)
        return u

    def _unpackb(self, data):
        u = self._unpacker(data)
        v = u.unpack()
        if u.tell() != len(data):
            raise ValueError("extra bytes in an extension payload")
        return v

    def _ext(self, code, data):
        if code == C.EXT_STR_REF:
            return self._strings[_index(data)]
        if code == C.EXT_STR_DEF:
            s = data.decode("utf-8", "surrogatepass")
            self._strings.append(s)
            return s
        if self._scanning and code in (C.EXT_HANDLE, C.EXT_OBJECT, C.EXT_HOOK):
            # scan(): passed over as the C++ reader's skip() does -- the
            # strings a payload defines still count, nothing is built or run.
            if code == C.EXT_HANDLE:
                _index(data)
            elif code == C.EXT_OBJECT:
                self._unpackb(data)
            else:
                _array(self._unpackb(data))
            return None
        if code == C.EXT_HANDLE:
            idx = _index(data)
            try:
                return self._bindings[idx]
            except KeyError:
                raise ValueError(f"handle {idx} refers to no live binding") from None
        if code == C.EXT_TUPLE:
            return tuple(_array(self._unpackb(data)))
        if code == C.EXT_BIGINT:
            if not data:
                raise ValueError("empty big int")
            return int.from_bytes(data, "big", signed=True)
        if code == C.EXT_SET:
            return set(_array(self._unpackb(data)))
        if code == C.EXT_FROZENSET:
            return frozenset(_array(self._unpackb(data)))
        if code == C.EXT_OBJECT:
            return C.rebuild_value(self._unpackb(data))
        if code == C.EXT_HOOK:
            pair = _array(self._unpackb(data))
            if len(pair) != 2 or type(pair[0]) is not str:
                raise ValueError("hook payload is not [name, state]")
            fn = self._hooks.get(pair[0])
            if fn is None:
                raise _NoHook(pair[0])
            return fn(pair[1])
        if code in (C.EXT_NEW_BINDING, C.EXT_BINDING_DELETE, C.EXT_THREAD_SWITCH):
            return _Marker(code, data)
        raise ValueError(f"unknown extension type {code}")

    def _decode_next(self):
        """Decode the next raw event → (kind, value, offset) or None at EOF."""
        if self._ahead:
            return self._ahead.pop(0)
        if self._error is not None:
            raise self._error
        while self._pos >= len(self._payload):
            try:
                more = self._next_frame()
            except RecordingFormatError as e:
                self._error = e
                raise
            if not more:
                return None
        offset = self._payload_offset + self._pos
        try:
            u = self._frame_unpacker
            if u is None:
                u = self._frame_unpacker = self._unpacker(self._payload)
            v = u.unpack()
            self._pos = u.tell()
            if type(v) is _Marker:
                return v.kind(self, offset)
        except _NoHook as e:
            raise LookupError(f"no reader hook registered for {e.args[0]!r} "
                              f"(StreamReader.register(name, from_state))") from None
        except Exception as e:
            err = C.format_error(f"undecodable event ({type(e).__name__}: {e})",
                                 offset, self._frame, self._event)
            self._error = err
            raise err from None
        return ("value", v, offset)

    def _fill(self):
        """Make self._head the next value/binding event, applying switches and deletes."""
        while self._head is None:
            ev = self._decode_next()
            if ev is None:
                return False
            kind = ev[0]
            if kind == "switch":
                self._thread = ev[1]
                self._event += 1
            elif kind == "delete":
                self._bindings.pop(ev[1], None)
                self._event += 1
            else:
                self._head = ev
        return True

    def reopen(self, path):
        """Continue with the recording at *path* (a forked child's, written by
        ``StreamWriter.reopen``): its header and preamble are read (``preamble``
        is the new one), the intern table and thread state start afresh, hooks
        stay, and the objects still bound here take the new file's first k
        NEW_BINDING markers in binding order. Returns k."""
        fresh = type(self)(path)
        live = [obj for _, obj in sorted(self._bindings.items(), key=lambda kv: kv[0])]
        hooks = self._hooks
        tags = self.async_tags
        old = self._f
        self.__dict__.update(fresh.__dict__)
        self._hooks = hooks
        self.async_tags = tags          # (async_marks: the parent's indices, cleared)
        fresh._f = None
        old.close()
        for i, obj in enumerate(live):
            if not self._fill() or self._head[0] != "binding":
                offset = self._head[2] if self._head is not None else self._offset
                raise C.format_error(
                    f"the recording does not start with the {len(live)} bindings inherited "
                    f"from its parent (found {i})", offset, self._frame, self._event,
                    "it is not this parent's child recording")
            self.bind(obj)
        return len(live)

    # ----------------------------------------------------------------- API
    def register(self, name, from_state):
        if type(name) is not str or not callable(from_state):
            raise TypeError("register(name, from_state) needs a str and a callable")
        self._hooks[name] = from_state

    def read(self):
        """The next value; EOFError at the clean end of the recording."""
        with self._mutex:
            return self._read_unlocked()

    def _read_unlocked(self):
        if not self._fill():
            raise EOFError("end of recording")
        kind, v, _ = self._head
        if kind == "binding":
            raise ValueError("the next event is NEW_BINDING: call bind(obj), not read()")
        self._head = None
        self._event += 1
        return v

    def _tape_contains(self, want):
        """Whether the bytes *want* occur in a frame of the rest of the tape,
        the frames read but not decoded; the reader is left where it was.
        An event equal to a string writes its bytes (itself, or the string
        table's definition of it), so scan() decodes nothing when they never
        occur. Damage counts as "maybe" (the decoding stops at it)."""
        saved = (self._frame, self._payload, self._frame_unpacker, self._pos,
                 self._payload_offset, self._offset)
        where = self._f.tell()
        try:
            while True:
                try:
                    if not self._next_frame():
                        return False
                except Exception:
                    return True
                if want in self._payload:
                    return True
        finally:
            self._f.seek(where)
            (self._frame, self._payload, self._frame_unpacker, self._pos,
             self._payload_offset, self._offset) = saved

    def scan(self, tag, nvalues):
        """``[(index, thread, after_previous, values)]``: every value event
        equal to the str *tag* in the rest of the tape (a reader nothing was
        read from yet), its thread, the event index just after that thread's
        previous event (None for its first), and the up to *nvalues* value
        events right after it, decoded. Other values are passed over (no
        hook runs, no binding is looked up). Damage ends the scan; what was
        found before it is returned. The C++ reader does the same without
        making the values it passes over."""
        if type(tag) is not str or type(nvalues) is not int or nvalues < 0:
            raise TypeError("scan(tag: str, nvalues: int >= 0)")
        with self._mutex:
            if self._head is not None or self._event or self._ahead:
                raise ValueError("scan() reads a whole tape: call it on a reader nothing was read from")
            if tag and not self._tape_contains(tag.encode("utf-8", "surrogatepass")):
                return []
            out, last, previous = [], {}, _NOTHING
            try:
                while True:
                    self._scanning = True
                    try:
                        more = self._fill()
                    except Exception:
                        break
                    index = self._event
                    if previous is not _NOTHING:
                        last[previous] = index
                    if not more:
                        break
                    previous = tid = self._thread
                    kind, value, _ = self._head
                    self._head = None
                    self._event += 1
                    if kind == "binding":
                        self._next_binding += 1
                        continue
                    if type(value) is not str or value != tag:
                        continue
                    values, damaged = [], False
                    self._scanning = False
                    while len(values) < nvalues:
                        try:
                            if not self._fill() or self._head[0] != "value":
                                break
                        except Exception:
                            damaged = True
                            break
                        values.append(self._head[1])
                        self._head = None
                        self._event += 1
                    out.append((index, tid, last.get(tid), values))
                    if damaged:
                        break
            finally:
                self._scanning = False
            return out

    def bind(self, obj):
        """Consume the NEW_BINDING at the head and give its handle to *obj*."""
        with self._mutex:
            return self._bind_unlocked(obj)

    def _bind_unlocked(self, obj):
        if not self._fill():
            raise EOFError("end of recording")
        if self._head[0] != "binding":
            raise ValueError("the next event is a value, not NEW_BINDING: call read()")
        self._head = None
        self._bindings[self._next_binding] = obj
        self._next_binding += 1
        self._event += 1

    def take_call(self, thread, call_tag, name, fp, result_tag, error_tag):
        with self._mutex:
            return self._take_call_unlocked(thread, call_tag, name, fp, result_tag, error_tag)

    def _take_call_unlocked(self, thread, call_tag, name, fp, result_tag, error_tag):
        """The replay's fast path (see the C++ reader): when the next events
        are ``call_tag name fp`` then ``result_tag value`` / ``error_tag exc``,
        all of *thread*, nothing in between, consume them and return ``(ok,
        value, same_thread)``; else consume nothing and return None."""
        if self._error is not None:
            return None
        try:
            if not self._fill():
                return None
        except Exception:
            return None
        kind, v, _ = self._head
        if kind != "value" or self._thread != thread or v != call_tag:
            return None
        ahead = self._ahead
        try:
            # Decoded events wait in _ahead for the ordinary reads when the
            # call is not taken (decoding has no effect that must be undone:
            # markers stop the lookahead before anything after them).
            while len(ahead) < 4 and self._pos < len(self._payload):
                ev = self._decode_next_in_frame()
                ahead.append(ev)
                if ev[0] != "value":
                    return None
        except Exception:
            return None
        if len(ahead) < 4:
            return None
        (k0, rname, _), (k1, rfp, _), (k2, tag, _), (k3, value, _) = ahead[:4]
        if k0 != "value" or k1 != "value" or k2 != "value" or k3 != "value":
            return None
        if rname != name or rfp != fp:
            return None
        if tag == result_tag:
            ok = True
        elif tag == error_tag:
            ok = False
        else:
            return None
        del ahead[:4]
        self._head = None
        self._event += 5
        try:
            more = self._fill()
        except Exception:
            more = False
        return ok, value, bool(more) and self._thread == thread and not self._head_is_async()

    def take_event(self, thread, tag, accept):
        with self._mutex:
            return self._take_event_unlocked(thread, tag, accept)

    def _take_event_unlocked(self, thread, tag, accept):
        """The fast path of a two-value event (see the C++ reader): when the
        next events are ``tag value`` of *thread* and ``accept(value)`` is
        true, consume both and return ``(value, same_thread)``; else consume
        nothing and return None."""
        if self._error is not None:
            return None
        try:
            if not self._fill():
                return None
        except Exception:
            return None
        kind, v, _ = self._head
        if kind != "value" or self._thread != thread or v != tag:
            return None
        ahead = self._ahead
        try:
            if not ahead and self._pos < len(self._payload):
                ahead.append(self._decode_next_in_frame())
        except Exception:
            return None
        if not ahead or ahead[0][0] != "value":
            return None
        head, first = self._head, ahead[0]
        if not accept(first[1]) or self._head is not head or not self._ahead or self._ahead[0] is not first:
            return None
        del ahead[0]
        self._head = None
        self._event += 2
        try:
            more = self._fill()
        except Exception:
            more = False
        return first[1], bool(more) and self._thread == thread and not self._head_is_async()

    def _head_is_async(self):
        """After a fast-path take: the head is an asynchronous event's tag
        (one of ``async_tags``: SIGNAL), counted as "the head left the
        thread" so the caller's handover() arms the search for its position
        (the C++ reader's head_is_async)."""
        tags = self.async_tags
        if not tags or self._head is None or self._head[0] != "value":
            return False
        v = self._head[1]
        return type(v) is str and v in tags

    @property
    def async_next(self):
        """The head is an asynchronous event (a tag in ``async_tags``), or
        ``events`` is one of ``async_marks`` (a frozenset of event indices
        set by the engine: the thread that consumed the event before it has
        an asynchronous event later on the tape, after other threads'). The
        C++ reader's get_async_next."""
        with self._mutex:
            try:
                if not self._fill():
                    return False
            except Exception:
                return False
            if self._head_is_async():
                return True
            marks = self.async_marks
            return marks is not None and self._event in marks

    def _decode_next_in_frame(self):
        """The next raw event of the current frame (caller checked one is left)."""
        ahead, self._ahead = self._ahead, []
        try:
            return self._decode_next()
        finally:
            self._ahead = ahead

    @property
    def thread(self):
        """Logical thread id of the next value (None before any THREAD_SWITCH)."""
        with self._mutex:
            self._fill()
            return self._thread

    @property
    def next_kind(self):
        """'value', 'binding' or None (end of recording), without consuming."""
        with self._mutex:
            if not self._fill():
                return None
            return self._head[0]

    @property
    def position(self):
        if self._head is not None:
            offset = self._head[2]
        elif self._pos < len(self._payload):
            offset = self._payload_offset + self._pos
        else:
            offset = self._offset
        return StreamPosition(self._frame, offset, self._event)

    @property
    def events(self) -> int:
        return self._event

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.read()
        except EOFError:
            raise StopIteration from None

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_NOTHING = object()


class _NoHook(Exception):
    pass


class _Marker:
    __slots__ = ("code", "data")

    def __init__(self, code, data):
        self.code = code
        self.data = data

    def kind(self, reader, offset):
        if self.code == C.EXT_NEW_BINDING:
            if self.data:
                raise ValueError("NEW_BINDING with a payload")
            return ("binding", None, offset)
        if self.code == C.EXT_BINDING_DELETE:
            return ("delete", _index(self.data), offset)
        return ("switch", reader._unpackb(self.data), offset)


def _index(data) -> int:
    if len(data) not in (1, 2, 4, 8):
        raise ValueError(f"index of {len(data)} bytes")
    return int.from_bytes(data, "big")


def _array(v):
    if type(v) is not list:
        raise ValueError("extension payload is not an array")
    return v


def thread_ids_changed():
    """A thread's logical id was given, changed or taken. The C++ writer then
    asks thread_id() again (cache_thread_id=True); this writer always asks."""
