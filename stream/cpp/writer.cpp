// StreamWriter: the C++ encoder (byte-for-byte the same as stream/_python.py)
// plus a background flusher thread.
//
// Locking (GIL rules):
//  * `mu` guards the event buffer and encoder tables. A Python thread takes it
//    for a whole write() call, possibly across calls into Python (hooks,
//    reduce_value) that release the GIL. To never deadlock against a thread
//    that holds `mu` and waits for the GIL, it is taken with try_lock first
//    and otherwise with the GIL released.
//  * The flusher thread is not a Python thread: it never touches a Python
//    object and never needs the GIL. It takes `mu` only to swap buffers, then
//    `io_mu` (order: mu -> io_mu) to keep frames in order on disk.
//  * A write never releases the GIL merely because the flusher is swapping
//    buffers (it spins briefly first, `enter`), and never blocks on `io_mu`
//    while a frame is being written (`check` reads the atomic `has_error`).
//    A write is often inside the program's critical section (a recorded lock
//    acquire writes its SYNC while holding the lock): dropping the GIL there
//    lets another thread block on that lock, and once threads sleep on a
//    lock every release is a handoff between threads (a convoy) — plain
//    CPython never drops the GIL inside `with lock: counter += 1`.
#include "common.h"
#include "zstd.h"

#include <atomic>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <algorithm>
#include <unordered_map>

#include <structmember.h>
#include <cerrno>
#include <cstring>
#include <csignal>
#include <pthread.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/file.h>
#include <string>
#include <unistd.h>

namespace retrace_stream {

namespace {

struct Binding {
    uint64_t index;
    PyObject* obj;  // strong
};

struct Core {
    std::mutex mu;
    std::mutex io_mu;
    std::condition_variable cv;
    Out buf;     // guarded by mu
    Out spare;   // guarded by io_mu
    std::unique_ptr<std::thread> flusher;
    bool stop = false;
    int fd = -1;
    int write_errno = 0;  // guarded by io_mu; reported by the next Python call
    std::atomic<bool> has_error{false};  // write_errno != 0 (read without io_mu)
    bool failed = false;  // guarded by io_mu: a frame was lost; later frames are dropped
    uint64_t written = 0; // guarded by io_mu: bytes of whole frames on disk
    std::chrono::microseconds interval{100000};
    size_t buffer_size = 65536;
    bool compress = true;        // frames are zstd-compressed (set before the flusher starts)
    zstd::Compressor zc;         // guarded by io_mu
    std::string zbuf;            // guarded by io_mu: the compressed frame
    std::unordered_map<PyObject*, Binding> bindings;
    std::vector<PyObject*> string_list;  // borrowed from `strings`
    // Interned strings by address, in front of `strings` (a dict lookup per
    // tag and name was ~15% of a recorded call): an entry counts only while
    // string_list[idx] is that very object, so rollbacks need no upkeep.
    struct StrSlot { PyObject* key = nullptr; size_t idx = 0; };
    StrSlot str_cache[64];
};

inline Core::StrSlot& str_slot(Core& c, PyObject* v) {
    return c.str_cache[(reinterpret_cast<uintptr_t>(v) >> 4) & 63];
}

struct Writer {
    PyObject_HEAD
    Core core;  // placement-constructed in tp_new
    PyObject* path;
    PyObject* thread_id;
    PyObject* last_thread;
    PyObject* strings;  // dict str -> index
    PyObject* hooks;    // dict type -> (name, to_state)
    PyObject* bad_value;
    PyObject* bad_path;  // list of path components, innermost first
    PyObject* weakrefs;
    uint64_t events;
    uint64_t next_binding;
    unsigned long owner;
    long pid;
    bool has_thread;
    bool closed;
    bool forked;
    bool intern;
    bool constructed;
    bool term_wanted;   // flush_on_sigterm() was asked for: re-armed by reopen()
    bool cache_tid;     // cache_thread_id=True: thread_id() is asked once per thread and epoch
    uint64_t serial;    // this writer, for the per-thread cache (addresses are reused)
};

// The calling thread's logical id as last returned by a caching writer's
// thread_id(): valid while (writer, g.thread_epoch) are unchanged. A thread
// keeps the logical id its parent gave it for life, so the lookup (a Python
// call, ~40% of a write) runs once per thread; the install layer calls
// thread_ids_changed() when it gives or takes an id (thread start, end,
// fork). Only touched with the GIL held. A thread's last cached id is not
// released when the thread ends (no GIL then): one small int or str.
struct TidCache {
    uint64_t serial = 0;
    uint64_t epoch = 0;
    PyObject* tid = nullptr;  // strong
};
// initial-exec TLS: an offset from the thread pointer, not a __tls_get_addr
// call per write (this module is dlopen'ed; the variable is 24 bytes).
#if defined(__GNUC__) && defined(__ELF__)
thread_local TidCache t_tid_cache __attribute__((tls_model("initial-exec")));
#else
thread_local TidCache t_tid_cache;
#endif

// New reference to the calling thread's logical id (w->thread_id not None).
inline PyObject* current_tid(Writer* w) {
    TidCache& c = t_tid_cache;
    if (w->cache_tid && c.serial == w->serial && c.epoch == g.thread_epoch && c.tid) return Py_NewRef(c.tid);
    PyObject* tid = PyObject_CallNoArgs(w->thread_id);
    if (!tid || !w->cache_tid) return tid;
    Py_XSETREF(c.tid, Py_NewRef(tid));
    c.serial = w->serial;
    c.epoch = g.thread_epoch;
    return tid;
}

// ------------------------------------------------------------ encoding

enum { OK = 0, ERR = -1, UNRECORDABLE = -2 };

inline void put_uint(Out& o, uint64_t u) {
    if (u < 0x80) o.put1(static_cast<uint8_t>(u));
    else if (u < 0x100) { o.put1(0xcc); o.put1(static_cast<uint8_t>(u)); }
    else if (u < 0x10000) { o.put1(0xcd); o.put_be16(static_cast<uint16_t>(u)); }
    else if (u < 0x100000000ull) { o.put1(0xce); o.put_be32(static_cast<uint32_t>(u)); }
    else { o.put1(0xcf); o.put_be64(u); }
}

inline void put_int(Out& o, long long v) {
    if (v >= 0) { put_uint(o, static_cast<uint64_t>(v)); return; }
    if (v >= -32) o.put1(static_cast<uint8_t>(v));
    else if (v >= -128) { o.put1(0xd0); o.put1(static_cast<uint8_t>(v)); }
    else if (v >= -32768) { o.put1(0xd1); o.put_be16(static_cast<uint16_t>(v)); }
    else if (v >= -2147483648LL) { o.put1(0xd2); o.put_be32(static_cast<uint32_t>(v)); }
    else { o.put1(0xd3); o.put_be64(static_cast<uint64_t>(v)); }
}

inline void put_array_header(Out& o, size_t n) {
    if (n < 16) o.put1(0x90 | n);
    else if (n < 0x10000) { o.put1(0xdc); o.put_be16(n); }
    else { o.put1(0xdd); o.put_be32(n); }
}

inline void put_map_header(Out& o, size_t n) {
    if (n < 16) o.put1(0x80 | n);
    else if (n < 0x10000) { o.put1(0xde); o.put_be16(n); }
    else { o.put1(0xdf); o.put_be32(n); }
}

// An index as a fixext of 1/2/4/8 big-endian bytes. Needs 10 bytes reserved.
inline void put_index_ext(Out& o, int8_t code, uint64_t idx) {
    if (idx < 0x100) { o.put1(0xd4); o.put1(code); o.put1(idx); }
    else if (idx < 0x10000) { o.put1(0xd5); o.put1(code); o.put_be16(idx); }
    else if (idx < 0x100000000ull) { o.put1(0xd6); o.put1(code); o.put_be32(idx); }
    else { o.put1(0xd7); o.put1(code); o.put_be64(idx); }
}

bool nomem() { PyErr_NoMemory(); return false; }

inline bool put_raw_ext(Out& o, int8_t code, const char* p, size_t n) {
    if (n > 0xffffffffu) { PyErr_SetString(PyExc_ValueError, "value too large to record"); return false; }
    if (!o.reserve(n + 6)) return nomem();
    uint8_t h[6];
    size_t hl = ext_header(h, n, code);
    o.put(h, hl);
    o.put(p, n);
    return true;
}

bool put_str_bytes(Out& o, const char* p, size_t n) {
    if (n > 0xffffffffu) { PyErr_SetString(PyExc_ValueError, "str too large to record"); return false; }
    if (!o.reserve(n + 5)) return nomem();
    if (n < 32) o.put1(0xa0 | n);
    else if (n < 0x100) { o.put1(0xd9); o.put1(n); }
    else if (n < 0x10000) { o.put1(0xda); o.put_be16(n); }
    else { o.put1(0xdb); o.put_be32(n); }
    o.put(p, n);
    return true;
}

// UTF-8 of a str, with surrogatepass (lone surrogates come from
// os.fsdecode of undecodable file names). `holder` keeps the bytes alive.
const char* utf8_of(PyObject* s, Py_ssize_t* n, PyObject** holder) {
    *holder = nullptr;
    const char* p = PyUnicode_AsUTF8AndSize(s, n);
    if (p) return p;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return nullptr;
    PyErr_Clear();
    *holder = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (!*holder) return nullptr;
    *n = PyBytes_GET_SIZE(*holder);
    return PyBytes_AS_STRING(*holder);
}

int encode(Writer* w, Out& o, PyObject* v, int depth);

// Begin an ext whose data is encoded in place: reserve the largest header.
inline bool ext_begin(Out& o, size_t* mark) {
    if (!o.reserve(6)) return nomem();
    *mark = o.size;
    o.size += 6;
    return true;
}

// Close it: write the real header and slide the data down over the gap.
inline bool ext_end(Out& o, size_t mark, int8_t code) {
    size_t len = o.size - mark - 6;
    if (len > 0xffffffffu) { PyErr_SetString(PyExc_ValueError, "value too large to record"); return false; }
    uint8_t h[6];
    size_t hl = ext_header(h, len, code);
    std::memcpy(o.data + mark, h, hl);
    if (hl != 6) std::memmove(o.data + mark + hl, o.data + mark + 6, len);
    o.size -= 6 - hl;
    return true;
}

int add_path(Writer* w, PyObject* component) {
    if (!component) return ERR;
    int rc = PyList_Append(w->bad_path, component);
    Py_DECREF(component);
    return rc < 0 ? ERR : UNRECORDABLE;
}

int encode_items(Writer* w, Out& o, PyObject* seq, int depth) {
    // list/tuple: items held strongly, size re-checked (a hook may mutate).
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (!o.reserve(5)) return nomem() ? OK : ERR;
    put_array_header(o, n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PySequence_Fast_GET_SIZE(seq) != n) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size while being recorded");
            return ERR;
        }
        PyObject* item = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(item);
        int rc = encode(w, o, item, depth + 1);
        Py_DECREF(item);
        if (rc == UNRECORDABLE) return add_path(w, PyUnicode_FromFormat("[%zd]", i));
        if (rc) return rc;
    }
    return OK;
}

int encode_iterable(Writer* w, Out& o, PyObject* v, Py_ssize_t n, int depth) {
    if (!o.reserve(5)) return nomem() ? OK : ERR;
    put_array_header(o, n);
    PyObject* it = PyObject_GetIter(v);
    if (!it) return ERR;
    Py_ssize_t i = 0;
    PyObject* item;
    while ((item = PyIter_Next(it))) {
        int rc = encode(w, o, item, depth + 1);
        Py_DECREF(item);
        if (rc == UNRECORDABLE) { Py_DECREF(it); return add_path(w, PyUnicode_FromFormat("[%zd]", i)); }
        if (rc) { Py_DECREF(it); return rc; }
        i++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return ERR;
    if (i != n) { PyErr_SetString(PyExc_RuntimeError, "set changed size while being recorded"); return ERR; }
    return OK;
}

int encode_str(Writer* w, Out& o, PyObject* v) {
    Py_ssize_t len = PyUnicode_GET_LENGTH(v);
    if (w->intern && len >= INTERN_MIN && len <= INTERN_MAX) {
        auto& list = w->core.string_list;
        Core::StrSlot& slot = str_slot(w->core, v);
        if (slot.key == v && slot.idx < list.size() && list[slot.idx] == v) {
            if (!o.reserve(10)) return nomem() ? OK : ERR;
            put_index_ext(o, EXT_STR_REF, slot.idx);
            return OK;
        }
        PyObject* idx = PyDict_GetItemWithError(w->strings, v);
        if (idx) {
            if (!o.reserve(10)) return nomem() ? OK : ERR;
            size_t i = static_cast<size_t>(PyLong_AsUnsignedLongLong(idx));
            if (i < list.size() && list[i] == v) slot = {v, i};
            put_index_ext(o, EXT_STR_REF, i);
            return OK;
        }
        if (PyErr_Occurred()) return ERR;
        if (list.size() < INTERN_LIMIT) {
            PyObject* num = PyLong_FromSize_t(list.size());
            if (!num) return ERR;
            int rc = PyDict_SetItem(w->strings, v, num);
            Py_DECREF(num);
            if (rc < 0) return ERR;
            list.push_back(v);  // the dict holds the reference
            slot = {v, list.size() - 1};
            Py_ssize_t n;
            PyObject* holder;
            const char* p = utf8_of(v, &n, &holder);
            if (!p) return ERR;
            bool ok = put_raw_ext(o, EXT_STR_DEF, p, n);
            Py_XDECREF(holder);
            return ok ? OK : ERR;
        }
    }
    Py_ssize_t n;
    PyObject* holder;
    const char* p = utf8_of(v, &n, &holder);
    if (!p) return ERR;
    bool ok = put_str_bytes(o, p, n);
    Py_XDECREF(holder);
    return ok ? OK : ERR;
}

int encode_int(Writer*, Out& o, PyObject* v) {
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (!o.reserve(9)) return nomem() ? OK : ERR;
    if (!overflow) {
        if (x == -1 && PyErr_Occurred()) return ERR;
        put_int(o, x);
        return OK;
    }
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(v);
        if (!(u == static_cast<unsigned long long>(-1) && PyErr_Occurred())) {
            put_uint(o, u);
            return OK;
        }
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return ERR;
        PyErr_Clear();
    }
    PyObject* b = PyObject_CallOneArg(g.bigint_bytes, v);
    if (!b) return ERR;
    if (!PyBytes_Check(b)) { Py_DECREF(b); PyErr_SetString(PyExc_TypeError, "bigint_bytes"); return ERR; }
    bool ok = put_raw_ext(o, EXT_BIGINT, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return ok ? OK : ERR;
}

int encode_slow(Writer* w, Out& o, PyObject* v, int depth);

int encode(Writer* w, Out& o, PyObject* v, int depth) {
    PyTypeObject* t = Py_TYPE(v);
    if (t == &PyUnicode_Type) return encode_str(w, o, v);
    if (t == &PyLong_Type) return encode_int(w, o, v);
    if (t == &PyFloat_Type) {
        if (!o.reserve(9)) return nomem() ? OK : ERR;
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t bits;
        std::memcpy(&bits, &d, 8);
        o.put1(0xcb);
        o.put_be64(bits);
        return OK;
    }
    if (v == Py_None || t == &PyBool_Type) {
        if (!o.reserve(1)) return nomem() ? OK : ERR;
        o.put1(v == Py_None ? 0xc0 : v == Py_True ? 0xc3 : 0xc2);
        return OK;
    }
    if (t == &PyBytes_Type) {
        size_t n = PyBytes_GET_SIZE(v);
        if (n > 0xffffffffu) { PyErr_SetString(PyExc_ValueError, "bytes too large to record"); return ERR; }
        if (!o.reserve(n + 5)) return nomem() ? OK : ERR;
        if (n < 0x100) { o.put1(0xc4); o.put1(n); }
        else if (n < 0x10000) { o.put1(0xc5); o.put_be16(n); }
        else { o.put1(0xc6); o.put_be32(n); }
        o.put(PyBytes_AS_STRING(v), n);
        return OK;
    }
    if (!w->core.bindings.empty()) {
        auto it = w->core.bindings.find(v);
        if (it != w->core.bindings.end()) {
            if (!o.reserve(10)) return nomem() ? OK : ERR;
            put_index_ext(o, EXT_HANDLE, it->second.index);
            return OK;
        }
    }
    return encode_slow(w, o, v, depth);
}

int encode_dict(Writer* w, Out& o, PyObject* v, int depth) {
    Py_ssize_t n = PyDict_GET_SIZE(v);
    if (!o.reserve(5)) return nomem() ? OK : ERR;
    put_map_header(o, n);
    Py_ssize_t pos = 0;
    PyObject *k, *item;
    Py_ssize_t seen = 0;
    while (PyDict_Next(v, &pos, &k, &item)) {
        Py_INCREF(k);
        Py_INCREF(item);
        int rc = encode(w, o, k, depth + 1);
        if (rc == UNRECORDABLE) rc = add_path(w, PyUnicode_FromFormat("<key %R>", k));
        if (!rc) {
            rc = encode(w, o, item, depth + 1);
            if (rc == UNRECORDABLE) rc = add_path(w, PyUnicode_FromFormat("[%R]", k));
        }
        Py_DECREF(k);
        Py_DECREF(item);
        if (rc) return rc;
        seen++;
        if (PyDict_GET_SIZE(v) != n) break;
    }
    if (seen != n || PyDict_GET_SIZE(v) != n) {
        PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
        return ERR;
    }
    return OK;
}

// ext whose data is the encoding of `payload`; `label` names it in paths.
int encode_ext_of(Writer* w, Out& o, int8_t code, PyObject* payload, int depth, PyObject* label) {
    size_t mark;
    if (!ext_begin(o, &mark)) return ERR;
    int rc = encode(w, o, payload, depth + 1);
    if (rc == UNRECORDABLE && label) return add_path(w, PyUnicode_FromFormat("<%S>", label));
    if (rc) return rc;
    return ext_end(o, mark, code) ? OK : ERR;
}

int encode_slow(Writer* w, Out& o, PyObject* v, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "value nested deeper than %d levels", MAX_DEPTH);
        return ERR;
    }
    PyTypeObject* t = Py_TYPE(v);
    if (t == &PyTuple_Type) {
        size_t mark;
        if (!ext_begin(o, &mark)) return ERR;
        int rc = encode_items(w, o, v, depth);
        if (rc) return rc;
        return ext_end(o, mark, EXT_TUPLE) ? OK : ERR;
    }
    if (t == &PyList_Type) return encode_items(w, o, v, depth);
    if (t == &PyDict_Type) return encode_dict(w, o, v, depth);
    if (t == &PySet_Type || t == &PyFrozenSet_Type) {
        size_t mark;
        if (!ext_begin(o, &mark)) return ERR;
        int rc = encode_iterable(w, o, v, PySet_GET_SIZE(v), depth);
        if (rc) return rc;
        return ext_end(o, mark, t == &PySet_Type ? EXT_SET : EXT_FROZENSET) ? OK : ERR;
    }
    PyObject* hook = PyDict_GetItemWithError(w->hooks, reinterpret_cast<PyObject*>(t));
    if (hook) {
        Py_INCREF(hook);
        PyObject* name = PyTuple_GET_ITEM(hook, 0);
        PyObject* state = PyObject_CallOneArg(PyTuple_GET_ITEM(hook, 1), v);
        if (!state) { Py_DECREF(hook); return ERR; }
        size_t mark;
        int rc = ERR;
        if (ext_begin(o, &mark) && o.reserve(1)) {
            put_array_header(o, 2);
            rc = encode(w, o, name, depth + 1);
            if (!rc) {
                rc = encode(w, o, state, depth + 1);
                if (rc == UNRECORDABLE) rc = add_path(w, PyUnicode_FromFormat("<%S>", name));
            }
            if (!rc && !ext_end(o, mark, EXT_HOOK)) rc = ERR;
        } else {
            PyErr_NoMemory();
        }
        Py_DECREF(state);
        Py_DECREF(hook);
        return rc;
    }
    if (PyErr_Occurred()) return ERR;
    PyObject* reduced = PyObject_CallOneArg(g.reduce_value, v);
    if (!reduced) return ERR;
    if (reduced == Py_None) {
        Py_DECREF(reduced);
        Py_XSETREF(w->bad_value, Py_NewRef(v));
        return UNRECORDABLE;
    }
    if (!PyTuple_Check(reduced) || PyTuple_GET_SIZE(reduced) != 2) {
        Py_DECREF(reduced);
        PyErr_SetString(PyExc_TypeError, "reduce_value must return (code, payload) or None");
        return ERR;
    }
    long code = PyLong_AsLong(PyTuple_GET_ITEM(reduced, 0));
    PyObject* payload = PyTuple_GET_ITEM(reduced, 1);
    int rc;
    if (code == -1 && PyErr_Occurred()) rc = ERR;
    else if (code == 0) rc = encode(w, o, payload, depth + 1);
    else {
        PyObject* label = (PyList_Check(payload) && PyList_GET_SIZE(payload) > 0)
                              ? PyList_GET_ITEM(payload, 0) : nullptr;
        rc = encode_ext_of(w, o, static_cast<int8_t>(code), payload, depth, label);
    }
    Py_DECREF(reduced);
    return rc;
}

// Encode one top-level value; an unrecordable value becomes the TypeError.
int encode_top(Writer* w, Out& o, PyObject* v) {
    int rc = encode(w, o, v, 0);
    if (rc == UNRECORDABLE) {
        PyObject* err = PyObject_CallFunctionObjArgs(g.unrecordable, w->bad_value, w->bad_path, nullptr);
        Py_CLEAR(w->bad_value);
        PyList_SetSlice(w->bad_path, 0, PY_SSIZE_T_MAX, nullptr);
        if (err) {
            PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err)), err);
            Py_DECREF(err);
        }
        return ERR;
    }
    if (rc) {
        Py_CLEAR(w->bad_value);
        PyList_SetSlice(w->bad_path, 0, PY_SSIZE_T_MAX, nullptr);
    }
    return rc;
}

// ------------------------------------------------------------ file I/O (no GIL)

int write_all(int fd, const struct iovec* iov_in, int cnt) {
    struct iovec iov[2];
    std::memcpy(iov, iov_in, sizeof(struct iovec) * cnt);
    int i = 0;
    while (i < cnt) {
        ssize_t n = ::writev(fd, iov + i, cnt - i);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        size_t left = static_cast<size_t>(n);
        while (i < cnt && left >= iov[i].iov_len) { left -= iov[i].iov_len; i++; }
        if (i < cnt) {
            iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
            iov[i].iov_len -= left;
        }
    }
    return 0;
}

// Caller holds `lk` on core.mu; returns with it held again.
void flush_locked(Core& c, std::unique_lock<std::mutex>& lk) {
    if (c.buf.size == 0 || c.fd < 0) return;
    std::unique_lock<std::mutex> io(c.io_mu);
    c.spare.swap(c.buf);
    c.buf.size = 0;
    lk.unlock();
    // Compressed here, outside `mu`: the program's threads keep appending
    // to the other buffer meanwhile. Each frame is one zstd frame of its
    // own, so every frame on disk can be read whatever happens later.
    const char* data = c.spare.data;
    size_t size = c.spare.size;
    uint32_t flag = 0;
    if (c.compress && !c.failed && c.zc.compress(c.spare.data, c.spare.size, c.zbuf) &&
        c.zbuf.size() < c.spare.size) {
        data = c.zbuf.data();
        size = c.zbuf.size();
        flag = FRAME_COMPRESSED;
    }
    uint8_t head[8];
    uint32_t len = static_cast<uint32_t>(size) | flag;
    uint32_t crc = crc32(data, size);
    std::memcpy(head, &len, 4);   // little-endian hosts only (x86-64, aarch64)
    std::memcpy(head + 4, &crc, 4);
    struct iovec iov[2] = {{head, 8}, {const_cast<char*>(data), size}};
    if (!c.failed) {
        int err = write_all(c.fd, iov, 2);
        if (err) {
            // Never write a later frame after a lost one (the tape would have
            // a silent hole); cut a partly written frame off, so the file
            // ends cleanly after the last whole frame.
            if (!c.write_errno) c.write_errno = err;
            c.has_error.store(true, std::memory_order_release);
            c.failed = true;
            if (::ftruncate(c.fd, static_cast<off_t>(c.written)) != 0) { /* best effort */ }
        } else {
            c.written += 8 + size;
        }
    }
    c.spare.size = 0;
    io.unlock();
    lk.lock();
}

// Our threads must never take one of the program's signals: they are born
// with every signal blocked (blocking them first thing in the thread would
// leave a window in which a process-directed signal the program blocks on
// its own threads, to sigwait for it, is delivered to ours and kills the
// process by its default action).
struct BlockAllSignals {
    sigset_t old;
    BlockAllSignals() {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
    }
    ~BlockAllSignals() { pthread_sigmask(SIG_SETMASK, &old, nullptr); }
};

void flusher_main(Core* c) {
    // Signals are the program's: a signal it blocks on its own threads (to
    // sigwait for it, say) must never be delivered to ours.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    std::unique_lock<std::mutex> lk(c->mu);
    for (;;) {
        c->cv.wait_for(lk, c->interval, [c] { return c->stop || c->buf.size >= c->buffer_size; });
        flush_locked(*c, lk);
        if (c->stop) return;
    }
}

// ------------------------------------------------------------ SIGTERM

// flush_on_sigterm(): a process killed by SIGTERM (Pool.terminate(), kill)
// would lose what is still buffered. While SIGTERM is at its default, a
// C-level handler (async-signal-safe: one write() to a pipe) wakes a thread
// of ours, which flushes the buffer and then kills the process with
// SIGTERM at its default disposition again, so it dies as it would have.
// No Python code runs: a Python-level handler would run only when the main
// thread next runs bytecode (never, if it is blocked in sem_wait). The
// program cannot tell: Python's signal module keeps its own table
// (getsignal says SIG_DFL), and a handler it installs replaces ours.
// Process-wide (signal dispositions are): one armed writer at a time.
namespace term {
std::atomic<Core*> core{nullptr};
std::atomic<long> pid{0};
int pipe_r = -1, pipe_w = -1;
std::thread* thread = nullptr;
Writer* owner = nullptr;

// Async-signal-safe (sigaction is).
void default_disposition(int sig) {
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    ::sigaction(sig, &dfl, nullptr);
}

extern "C" void on_signal(int sig) {
    int saved = errno;
    if (static_cast<long>(::getpid()) == pid.load()) {
        char c = static_cast<char>(sig);
        if (::write(pipe_w, &c, 1) < 0) { /* nothing to do in a handler */ }
    } else {
        // A forked child not re-armed yet: die as SIGTERM would have.
        default_disposition(sig);
        ::kill(::getpid(), sig);
    }
    errno = saved;
}

void thread_main(int rfd) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    for (;;) {
        char c = 0;
        ssize_t n = ::read(rfd, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || c == 0) return;   // disarmed
        Core* co = core.load();
        if (co) {
            std::unique_lock<std::mutex> lk(co->mu);
            flush_locked(*co, lk);
        }
        default_disposition(c);
        ::kill(::getpid(), c);
        // Every other thread blocks it (the program masked SIGTERM after we
        // armed): it stays pending, as it would have without us.
        return;
    }
}

// Arm for *w*; false (nothing changed) unless SIGTERM is at its default.
bool arm(Writer* w) {
    struct sigaction now;
    if (::sigaction(SIGTERM, nullptr, &now) != 0) return false;
    // (ours is inherited by a forked child, which re-arms in reopen())
    if ((now.sa_handler != SIG_DFL && now.sa_handler != on_signal) || (now.sa_flags & SA_SIGINFO)) return false;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    try {
        BlockAllSignals blocked;
        thread = new std::thread(thread_main, fds[0]);
    } catch (...) {
        ::close(fds[0]); ::close(fds[1]);
        return false;
    }
    pipe_r = fds[0]; pipe_w = fds[1];
    core.store(&w->core);
    pid.store(static_cast<long>(::getpid()));
    owner = w;
    struct sigaction act;
    std::memset(&act, 0, sizeof act);
    act.sa_handler = on_signal;
    sigemptyset(&act.sa_mask);
    act.sa_flags = SA_RESTART;   // the program's system calls never see EINTR from us
    ::sigaction(SIGTERM, &act, nullptr);
    return true;
}

// Undo arm() (call without the GIL: joins our thread).
void disarm(Writer* w) {
    if (owner != w) return;
    struct sigaction now;
    if (::sigaction(SIGTERM, nullptr, &now) == 0 && now.sa_handler == on_signal) {
        default_disposition(SIGTERM);
    }
    core.store(nullptr);
    char stop = 0;
    if (::write(pipe_w, &stop, 1) < 0) { /* the thread ends at close below */ }
    if (thread && thread->joinable()) thread->join();
    delete thread;
    thread = nullptr;
    ::close(pipe_r); ::close(pipe_w);
    pipe_r = pipe_w = -1;
    owner = nullptr;
}

// In a forked child: our thread does not exist here and the pipe is the
// parent's. Forget both (the handler already refuses to use them: pid).
void forget_after_fork(Writer* w) {
    if (owner != w) return;
    (void)thread;   // leaked: a std::thread of a vanished thread must not be joined or destroyed
    thread = nullptr;
    core.store(nullptr);
    if (pipe_r >= 0) ::close(pipe_r);
    if (pipe_w >= 0) ::close(pipe_w);
    pipe_r = pipe_w = -1;
    owner = nullptr;
}
}  // namespace term

// ------------------------------------------------------------ Python glue

// Try to take *mu* for a few microseconds with the GIL held: the flusher
// holds it only to swap buffers. A Python thread holding it across a hook
// that released the GIL keeps it longer; then the caller gives up the GIL.
bool spin_lock(std::mutex& mu) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    for (;;) {
        for (int i = 0; i < 64; i++) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#elif defined(__aarch64__)
            asm volatile("yield");
#endif
            if (mu.try_lock()) return true;
        }
        if (std::chrono::steady_clock::now() >= deadline) return false;
    }
}

// Take core.mu the GIL-safe way; refuse re-entrant use.
bool enter(Writer* w) {
    unsigned long me = PyThread_get_thread_ident();
    if (w->owner == me) {
        PyErr_SetString(PyExc_RuntimeError,
                        "StreamWriter used re-entrantly (from a hook or thread_id called by this same write)");
        return false;
    }
    if (!w->core.mu.try_lock() && !spin_lock(w->core.mu)) {
        Py_BEGIN_ALLOW_THREADS
        w->core.mu.lock();
        Py_END_ALLOW_THREADS
    }
    w->owner = me;
    return true;
}

inline void leave(Writer* w) {
    w->owner = 0;
    w->core.mu.unlock();
}

bool check(Writer* w) {
    if (w->forked) {
        PyObject* e = PyObject_CallFunction(g.forked_error, "l", w->pid);
        if (e) { PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(e)), e); Py_DECREF(e); }
        return false;
    }
    if (w->closed || !w->constructed) {
        PyErr_SetString(PyExc_ValueError, "StreamWriter is closed");
        return false;
    }
    int err = 0;
    if (w->core.has_error.load(std::memory_order_acquire)) {
        std::lock_guard<std::mutex> io(w->core.io_mu);  // never held across Python
        err = w->core.write_errno;
        w->core.write_errno = 0;
        w->core.has_error.store(false, std::memory_order_relaxed);
    }
    if (err) {
        PyErr_Format(g.recording_error, "writing %S failed: %s", w->path, std::strerror(err));
        return false;
    }
    return true;
}

// Save/restore the pending exception around cleanup.  # PYVERSIONS
struct SavedError {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject* exc = PyErr_GetRaisedException();
    ~SavedError() { PyErr_SetRaisedException(exc); }
#else
    PyObject *t, *v, *tb;
    SavedError() { PyErr_Fetch(&t, &v, &tb); }
    ~SavedError() { PyErr_Restore(t, v, tb); }
#endif
};

void rollback_strings(Writer* w, size_t count) {
    SavedError saved;
    auto& list = w->core.string_list;
    while (list.size() > count) {
        PyObject* s = list.back();
        list.pop_back();
        if (PyDict_DelItem(w->strings, s) < 0) PyErr_Clear();
    }
}

// THREAD_SWITCH when `tid` differs from the last thread; returns events added or -1.
int maybe_switch(Writer* w, Out& o, PyObject* tid) {
    if (w->has_thread) {
        int eq = PyObject_RichCompareBool(tid, w->last_thread, Py_EQ);
        if (eq < 0) return -1;
        if (eq) return 0;
    }
    size_t mark;
    if (!ext_begin(o, &mark)) return -1;
    if (encode_top(w, o, tid)) return -1;
    if (!ext_end(o, mark, EXT_THREAD_SWITCH)) return -1;
    Py_INCREF(tid);
    Py_XSETREF(w->last_thread, tid);
    w->has_thread = true;
    return 1;
}

struct CallState {
    size_t start;
    size_t nstrings;
    bool has_thread;
    PyObject* last_thread;  // strong
};

void begin_call(Writer* w, CallState& st) {
    st.start = w->core.buf.size;
    st.nstrings = w->core.string_list.size();
    st.has_thread = w->has_thread;
    st.last_thread = Py_XNewRef(w->last_thread);
}

void undo_call(Writer* w, CallState& st) {
    w->core.buf.size = st.start;
    rollback_strings(w, st.nstrings);
    w->has_thread = st.has_thread;
    Py_XSETREF(w->last_thread, st.last_thread);
    st.last_thread = nullptr;
}

PyObject* Writer_write(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Writer* w = reinterpret_cast<Writer*>(self);
    if (!check(w)) return nullptr;
    PyObject* tid = nullptr;
    if (w->thread_id != Py_None) {
        if (w->owner == PyThread_get_thread_ident()) {
            PyErr_SetString(PyExc_RuntimeError, "StreamWriter used re-entrantly");
            return nullptr;
        }
        tid = current_tid(w);
        if (!tid) return nullptr;
    }
    if (!enter(w)) { Py_XDECREF(tid); return nullptr; }
    if (w->forked || w->closed) {  // changed while we waited for the lock
        leave(w);
        Py_XDECREF(tid);
        return check(w), nullptr;
    }
    CallState st;
    begin_call(w, st);
    Out& o = w->core.buf;
    int added = 0;
    if (tid) {
        added = maybe_switch(w, o, tid);
        Py_DECREF(tid);
        if (added < 0) goto fail;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (encode_top(w, o, args[i])) goto fail;
    }
    w->events += added + nargs;
    Py_XDECREF(st.last_thread);
    {
        bool full = o.size >= w->core.buffer_size;
        leave(w);
        if (full) w->core.cv.notify_one();
    }
    Py_RETURN_NONE;
fail:
    undo_call(w, st);
    leave(w);
    return nullptr;
}

bool bindable(PyObject* obj) {
    PyTypeObject* t = Py_TYPE(obj);
    if (obj == Py_None || t == &PyBool_Type || t == &PyLong_Type || t == &PyFloat_Type ||
        t == &PyUnicode_Type || t == &PyBytes_Type) {
        PyErr_Format(PyExc_TypeError, "cannot bind a value of immutable type %s", t->tp_name);
        return false;
    }
    return true;
}

PyObject* Writer_bind(PyObject* self, PyObject* obj) {
    Writer* w = reinterpret_cast<Writer*>(self);
    if (!bindable(obj) || !check(w)) return nullptr;
    PyObject* tid = nullptr;
    if (w->thread_id != Py_None) {
        if (w->owner == PyThread_get_thread_ident()) {
            PyErr_SetString(PyExc_RuntimeError, "StreamWriter used re-entrantly");
            return nullptr;
        }
        tid = current_tid(w);
        if (!tid) return nullptr;
    }
    if (!enter(w)) { Py_XDECREF(tid); return nullptr; }
    CallState st;
    begin_call(w, st);
    Out& o = w->core.buf;
    int added = 0;
    if (w->core.bindings.count(obj)) {
        PyObject* name = PyObject_CallOneArg(g.type_name, reinterpret_cast<PyObject*>(Py_TYPE(obj)));
        if (name) { PyErr_Format(PyExc_ValueError, "%U object is already bound", name); Py_DECREF(name); }
        Py_XDECREF(tid);
        goto fail;
    }
    if (tid) {
        added = maybe_switch(w, o, tid);
        Py_DECREF(tid);
        if (added < 0) goto fail;
    }
    if (!o.reserve(3)) { PyErr_NoMemory(); goto fail; }
    o.put1(0xc7); o.put1(0); o.put1(EXT_NEW_BINDING);
    w->core.bindings.emplace(obj, Binding{w->next_binding++, Py_NewRef(obj)});
    w->events += added + 1;
    Py_XDECREF(st.last_thread);
    leave(w);
    Py_RETURN_NONE;
fail:
    undo_call(w, st);
    leave(w);
    return nullptr;
}

PyObject* Writer_unbind(PyObject* self, PyObject* obj) {
    Writer* w = reinterpret_cast<Writer*>(self);
    if (!check(w) || !enter(w)) return nullptr;
    auto it = w->core.bindings.find(obj);
    if (it == w->core.bindings.end()) {
        leave(w);
        PyObject* name = PyObject_CallOneArg(g.type_name, reinterpret_cast<PyObject*>(Py_TYPE(obj)));
        if (name) {
            PyObject* msg = PyUnicode_FromFormat("%U object is not bound", name);
            if (msg) { PyErr_SetObject(PyExc_KeyError, msg); Py_DECREF(msg); }
            Py_DECREF(name);
        }
        return nullptr;
    }
    Out& o = w->core.buf;
    if (!o.reserve(10)) { leave(w); return PyErr_NoMemory(); }
    put_index_ext(o, EXT_BINDING_DELETE, it->second.index);
    PyObject* held = it->second.obj;
    w->core.bindings.erase(it);
    w->events += 1;
    leave(w);
    Py_DECREF(held);  // may run arbitrary code: after the lock is released
    Py_RETURN_NONE;
}

PyObject* Writer_is_bound(PyObject* self, PyObject* obj) {
    Writer* w = reinterpret_cast<Writer*>(self);
    return PyBool_FromLong(w->core.bindings.count(obj) != 0);
}

PyObject* Writer_register(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Writer* w = reinterpret_cast<Writer*>(self);
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "register(type, name, to_state) takes 3 arguments");
        return nullptr;
    }
    if (!PyType_Check(args[0])) { PyErr_SetString(PyExc_TypeError, "register(type, name, to_state): type must be a type"); return nullptr; }
    if (!PyUnicode_CheckExact(args[1])) { PyErr_SetString(PyExc_TypeError, "register(type, name, to_state): name must be a str"); return nullptr; }
    if (!PyCallable_Check(args[2])) { PyErr_SetString(PyExc_TypeError, "register(type, name, to_state): to_state must be callable"); return nullptr; }
    PyObject* pair = PyTuple_Pack(2, args[1], args[2]);
    if (!pair) return nullptr;
    int rc = PyDict_SetItem(w->hooks, args[0], pair);
    Py_DECREF(pair);
    if (rc < 0) return nullptr;
    Py_RETURN_NONE;
}

PyObject* Writer_flush(PyObject* self, PyObject*) {
    Writer* w = reinterpret_cast<Writer*>(self);
    if (!check(w)) return nullptr;
    if (w->owner == PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError, "StreamWriter.flush called re-entrantly");
        return nullptr;
    }
    Py_BEGIN_ALLOW_THREADS
    {
        std::unique_lock<std::mutex> lk(w->core.mu);
        flush_locked(w->core, lk);
    }
    Py_END_ALLOW_THREADS
    if (!check(w)) return nullptr;
    Py_RETURN_NONE;
}

// Stop the flusher, write what is left, close the file. No Python error set
// unless it returns false.
bool close_impl(Writer* w) {
    if (w->closed || w->forked || !w->constructed) { w->closed = true; return true; }
    if (w->owner == PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError, "StreamWriter.close called re-entrantly");
        return false;
    }
    Core& c = w->core;
    Py_BEGIN_ALLOW_THREADS
    term::disarm(w);
    {
        std::unique_lock<std::mutex> lk(c.mu);
        c.stop = true;
    }
    c.cv.notify_one();
    if (c.flusher && c.flusher->joinable()) c.flusher->join();
    c.flusher.reset();
    {
        std::unique_lock<std::mutex> lk(c.mu);
        flush_locked(c, lk);
    }
    Py_END_ALLOW_THREADS
    w->closed = true;
    int err;
    {
        std::lock_guard<std::mutex> io(c.io_mu);
        if (c.fd >= 0) { ::close(c.fd); c.fd = -1; }
        err = c.write_errno;
        c.write_errno = 0;
        c.has_error.store(false, std::memory_order_relaxed);
    }
    if (err) {
        PyErr_Format(g.recording_error, "writing %S failed: %s", w->path, std::strerror(err));
        return false;
    }
    return true;
}

PyObject* Writer_close(PyObject* self, PyObject*) {
    if (!close_impl(reinterpret_cast<Writer*>(self))) return nullptr;
    Py_RETURN_NONE;
}

PyObject* Writer_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }

PyObject* Writer_exit(PyObject* self, PyObject*) {
    if (!close_impl(reinterpret_cast<Writer*>(self))) return nullptr;
    Py_RETURN_FALSE;
}

PyObject* Writer_forked_child(PyObject* self, PyObject*) {
    Writer* w = reinterpret_cast<Writer*>(self);
    if (!w->constructed || w->pid == static_cast<long>(getpid())) Py_RETURN_NONE;
    w->forked = true;
    w->owner = 0;
    term::forget_after_fork(w);
    // The flusher thread does not exist in the child; its std::thread object
    // must be neither joined nor destroyed (that would terminate). Leak it.
    (void)w->core.flusher.release();
    if (w->core.fd >= 0) { ::close(w->core.fd); w->core.fd = -1; }
    Py_RETURN_NONE;
}

PyObject* Writer_child_writer(PyObject* self, PyObject* args);

// Create the recording file at `path` (docs/RELIABILITY.md, "Sharing
// recordings"): a symlink there is replaced, never followed (the file is made
// under a fresh temporary name with O_EXCL|O_NOFOLLOW in the same folder and
// renamed into place); it holds an advisory lock (flock) while it is written,
// and a file another recorder still holds is refused with EBUSY. A path that
// is neither missing, a symlink nor a regular file (/dev/null, a FIFO) is
// opened as it is. Returns 0 and the fd, or an errno.
static int create_recording(const char* path, int* fd_out) {
    struct stat st;
    bool exists = ::lstat(path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) return EISDIR;
    if (exists && !S_ISLNK(st.st_mode) && !S_ISREG(st.st_mode)) {
        int fd = ::open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) return errno;
        *fd_out = fd;
        return 0;
    }
    if (exists && S_ISREG(st.st_mode)) {
        int old = ::open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (old >= 0) {
            bool busy = ::flock(old, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
            ::close(old);
            if (busy) return EBUSY;
        }
    }
    std::string full(path);
    size_t slash = full.rfind('/');
    std::string dir = slash == std::string::npos ? std::string() : full.substr(0, slash + 1);
    std::string base = slash == std::string::npos ? full : full.substr(slash + 1);
    static std::atomic<unsigned> counter{0};
    int fd = -1;
    std::string tmp;
    for (int attempt = 0; attempt < 100; attempt++) {
        tmp = dir + "." + base + "." + std::to_string(::getpid()) + "." +
              std::to_string(counter.fetch_add(1)) + ".tmp";
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EEXIST) break;
    }
    if (fd < 0) return errno;
    int err = 0;
    if (::flock(fd, LOCK_EX | LOCK_NB) < 0) err = errno;
    if (!err && ::rename(tmp.c_str(), path) < 0) err = errno;
    if (err) {
        ::close(fd);
        ::unlink(tmp.c_str());
        return err;
    }
    *fd_out = fd;
    return 0;
}

PyObject* Writer_reopen(PyObject* self, PyObject* args);

PyObject* Writer_flush_on_sigterm(PyObject* self, PyObject*) {
    Writer* w = reinterpret_cast<Writer*>(self);
    if (!check(w)) return nullptr;
    w->term_wanted = true;
    if (term::owner == w) Py_RETURN_TRUE;
    if (term::owner != nullptr) Py_RETURN_FALSE;
    return PyBool_FromLong(term::arm(w));
}

PyMethodDef writer_methods[] = {
    {"write", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Writer_write)), METH_FASTCALL,
     "write(*values): append each value as one event (all or none)."},
    {"bind", Writer_bind, METH_O, "bind(obj): emit NEW_BINDING; later writes of obj encode a handle."},
    {"unbind", Writer_unbind, METH_O, "unbind(obj): emit BINDING_DELETE and release obj."},
    {"is_bound", Writer_is_bound, METH_O, "is_bound(obj) -> bool"},
    {"register", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Writer_register)), METH_FASTCALL,
     "register(type, name, to_state): record values of exactly `type` as a hook value."},
    {"flush", Writer_flush, METH_NOARGS, "flush(): write everything buffered as one frame, now."},
    {"close", Writer_close, METH_NOARGS, "close(): flush, stop the flusher thread, close the file."},
    {"child_writer", Writer_child_writer, METH_VARARGS, "child_writer(path, preamble): a fresh writer with the same options."},
    {"reopen", Writer_reopen, METH_VARARGS,
     "reopen(path, preamble) -> int: in a forked child, continue this writer on a new file."},
    {"flush_on_sigterm", Writer_flush_on_sigterm, METH_NOARGS,
     "flush_on_sigterm() -> bool: while SIGTERM is at its default, flush before dying of it (C++ only)."},
    {"_forked_child", Writer_forked_child, METH_NOARGS, nullptr},
    {"__enter__", Writer_enter, METH_NOARGS, nullptr},
    {"__exit__", Writer_exit, METH_VARARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyObject* get_events(PyObject* self, void*) { return PyLong_FromUnsignedLongLong(reinterpret_cast<Writer*>(self)->events); }
PyObject* get_failed(PyObject* self, void*) {
    Writer* w = reinterpret_cast<Writer*>(self);
    bool failed;
    {
        std::lock_guard<std::mutex> io(w->core.io_mu);
        failed = w->core.failed;
    }
    return PyBool_FromLong(failed);
}

PyObject* get_closed(PyObject* self, void*) { return PyBool_FromLong(reinterpret_cast<Writer*>(self)->closed); }
PyObject* get_forked(PyObject* self, void*) { return PyBool_FromLong(reinterpret_cast<Writer*>(self)->forked); }
PyObject* get_pid(PyObject* self, void*) { return PyLong_FromLong(reinterpret_cast<Writer*>(self)->pid); }
PyObject* get_path(PyObject* self, void*) { return Py_NewRef(reinterpret_cast<Writer*>(self)->path); }

PyObject* get_compress(PyObject* self, void*) {
    Writer* w = reinterpret_cast<Writer*>(self);
    return PyBool_FromLong(w->core.compress && zstd::available());
}

PyGetSetDef writer_getset[] = {
    {"compress", get_compress, nullptr, "True when frames are zstd-compressed (asked for and libzstd loaded)", nullptr},
    {"events", get_events, nullptr, "events written (values, switches, binding events)", nullptr},
    {"closed", get_closed, nullptr, nullptr, nullptr},
    {"failed", get_failed, nullptr, "True once a frame could not be written: later events are dropped", nullptr},
    {"forked", get_forked, nullptr, "True in a forked child: this writer is the parent's", nullptr},
    {"pid", get_pid, nullptr, "the process this writer belongs to", nullptr},
    {"path", get_path, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

void clear_refs(Writer* w) {
    for (auto& kv : w->core.bindings) Py_DECREF(kv.second.obj);
    w->core.bindings.clear();
    w->core.string_list.clear();
    Py_CLEAR(w->path);
    Py_CLEAR(w->thread_id);
    Py_CLEAR(w->last_thread);
    Py_CLEAR(w->strings);
    Py_CLEAR(w->hooks);
    Py_CLEAR(w->bad_value);
    Py_CLEAR(w->bad_path);
}

PyObject* Writer_new(PyTypeObject* type, PyObject*, PyObject*) {
    Writer* w = reinterpret_cast<Writer*>(type->tp_alloc(type, 0));
    if (!w) return nullptr;
    new (&w->core) Core();
    w->strings = PyDict_New();
    w->hooks = PyDict_New();
    w->bad_path = PyList_New(0);
    w->thread_id = Py_NewRef(Py_None);
    w->pid = static_cast<long>(getpid());
    w->intern = true;
    w->serial = g.next_writer_serial++;
    if (!w->strings || !w->hooks || !w->bad_path) { Py_DECREF(w); return nullptr; }
    return reinterpret_cast<PyObject*>(w);
}

int Writer_init(PyObject* self, PyObject* args, PyObject* kwds) {
    Writer* w = reinterpret_cast<Writer*>(self);
    static const char* kwlist[] = {"path", "preamble", "thread_id", "flush_interval", "buffer_size", "compress",
                                   "cache_thread_id", nullptr};
    PyObject *path, *preamble, *thread_id = Py_None;
    double interval = 0.1;
    Py_ssize_t buffer_size = 65536;
    int compress = 1;
    int cache_tid = 0;
    if (w->constructed) { PyErr_SetString(PyExc_RuntimeError, "StreamWriter already initialised"); return -1; }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&O|$Odnpp:StreamWriter", const_cast<char**>(kwlist),
                                     PyUnicode_FSConverter, &path, &preamble, &thread_id, &interval, &buffer_size,
                                     &compress, &cache_tid))
        return -1;
    PyObject* fspath = path;  // bytes from FSConverter
    if (!PyDict_CheckExact(preamble)) {
        Py_DECREF(fspath);
        PyObject* name = PyObject_CallOneArg(g.type_name, reinterpret_cast<PyObject*>(Py_TYPE(preamble)));
        if (name) { PyErr_Format(PyExc_TypeError, "preamble must be a dict, not %U", name); Py_DECREF(name); }
        return -1;
    }
    if (thread_id != Py_None && !PyCallable_Check(thread_id)) {
        Py_DECREF(fspath);
        PyErr_SetString(PyExc_TypeError, "thread_id must be callable or None");
        return -1;
    }
    if (!(interval > 0)) { Py_DECREF(fspath); PyErr_SetString(PyExc_ValueError, "flush_interval must be > 0 seconds"); return -1; }
    if (buffer_size <= 0) { Py_DECREF(fspath); PyErr_SetString(PyExc_ValueError, "buffer_size must be > 0 bytes"); return -1; }
    Py_XSETREF(w->path, PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(fspath)));
    Py_XSETREF(w->thread_id, Py_NewRef(thread_id));
    w->core.interval = std::chrono::microseconds(static_cast<long long>(interval * 1e6));
    w->core.buffer_size = static_cast<size_t>(buffer_size);
    w->core.compress = compress != 0;
    w->cache_tid = cache_tid != 0;

    // Header + preamble frame, encoded without interning.
    Out pre;
    w->intern = false;
    int rc = encode_top(w, pre, preamble);
    w->intern = true;
    if (rc) { Py_DECREF(fspath); return -1; }
    Out head;
    if (!head.reserve(HEADER_SIZE + FRAME_HEADER_SIZE)) { Py_DECREF(fspath); PyErr_NoMemory(); return -1; }
    head.put(MAGIC, 8);
    uint32_t v = FORMAT_VERSION, len = static_cast<uint32_t>(pre.size), crc = crc32(pre.data, pre.size);
    head.put(&v, 4);
    head.put(&len, 4);
    head.put(&crc, 4);
    int fd;
    int err = 0;
    const char* cpath = PyBytes_AS_STRING(fspath);
    Py_BEGIN_ALLOW_THREADS
    fd = -1;
    err = create_recording(cpath, &fd);
    if (!err) {
        if (::fchmod(fd, 0600) < 0) err = errno;
        struct iovec iov[2] = {{head.data, head.size}, {pre.data, pre.size}};
        if (!err) err = write_all(fd, iov, 2);
        if (err) ::close(fd);
    }
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, w->path);
        Py_DECREF(fspath);
        return -1;
    }
    Py_DECREF(fspath);
    w->core.fd = fd;
    w->core.written = head.size + pre.size;
    try {
        BlockAllSignals blocked;
        w->core.flusher = std::make_unique<std::thread>(flusher_main, &w->core);
    } catch (const std::exception& e) {
        ::close(fd);
        w->core.fd = -1;
        PyErr_Format(g.recording_error, "cannot start the stream flusher thread: %s", e.what());
        return -1;
    }
    w->constructed = true;
    PyObject* r = PyObject_CallOneArg(g.track_writer, self);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

int Writer_traverse(PyObject* self, visitproc visit, void* arg) {
    Writer* w = reinterpret_cast<Writer*>(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(w->thread_id);
    Py_VISIT(w->last_thread);
    Py_VISIT(w->hooks);
    for (auto& kv : w->core.bindings) Py_VISIT(kv.second.obj);
    return 0;
}

int Writer_clear(PyObject* self) {
    Writer* w = reinterpret_cast<Writer*>(self);
    Py_CLEAR(w->thread_id);
    Py_CLEAR(w->hooks);
    Py_CLEAR(w->last_thread);
    // bindings are released in dealloc (they must stay valid while encoding)
    return 0;
}

void Writer_dealloc(PyObject* self) {
    Writer* w = reinterpret_cast<Writer*>(self);
    PyTypeObject* tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (w->weakrefs) PyObject_ClearWeakRefs(self);
    if (!w->closed && !w->forked && w->constructed) {
        SavedError saved;
        if (!close_impl(w)) PyErr_WriteUnraisable(self);
    }
    clear_refs(w);
    if (w->forked) {
        // The child must not run ~mutex on locks another (vanished) thread may hold.
        (void)w->core.flusher.release();
    } else {
        w->core.~Core();
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

PyMemberDef writer_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(Writer, weakrefs), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

PyType_Slot writer_slots[] = {
    {Py_tp_members, writer_members},
    {Py_tp_new, reinterpret_cast<void*>(Writer_new)},
    {Py_tp_init, reinterpret_cast<void*>(Writer_init)},
    {Py_tp_dealloc, reinterpret_cast<void*>(Writer_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(Writer_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(Writer_clear)},
    {Py_tp_methods, writer_methods},
    {Py_tp_getset, writer_getset},
    {Py_tp_doc, const_cast<char*>("StreamWriter(path, preamble, *, thread_id=None, flush_interval=0.1, buffer_size=65536, compress=True, "
                                  "cache_thread_id=False)\n\n"
                                  "Appends events to a recording file (docs/FORMAT.md).")},
    {0, nullptr},
};

PyObject* Writer_child_writer(PyObject* self, PyObject* args) {
    Writer* w = reinterpret_cast<Writer*>(self);
    PyObject *path, *preamble;
    if (!PyArg_ParseTuple(args, "OO:child_writer", &path, &preamble)) return nullptr;
    PyObject* kw = Py_BuildValue("{sOsdsnsOsO}", "thread_id", w->thread_id ? w->thread_id : Py_None,
                                 "flush_interval", w->core.interval.count() / 1e6,
                                 "buffer_size", static_cast<Py_ssize_t>(w->core.buffer_size),
                                 "compress", w->core.compress ? Py_True : Py_False,
                                 "cache_thread_id", w->cache_tid ? Py_True : Py_False);
    if (!kw) return nullptr;
    PyObject* a = PyTuple_Pack(2, path, preamble);
    if (!a) { Py_DECREF(kw); return nullptr; }
    PyObject* nw = PyObject_Call(reinterpret_cast<PyObject*>(Py_TYPE(self)), a, kw);
    Py_DECREF(a);
    Py_DECREF(kw);
    if (!nw) return nullptr;
    Writer* n = reinterpret_cast<Writer*>(nw);
    if (w->hooks && PyDict_Update(n->hooks, w->hooks) < 0) { Py_DECREF(nw); return nullptr; }
    return nw;
}

// In a forked child: continue this writer on a new file (see _python.py
// StreamWriter.reopen for the contract). The parent's Core is abandoned, not
// destroyed: its mutexes may be held by a thread that does not exist here.
PyObject* Writer_reopen(PyObject* self, PyObject* args) {
    Writer* w = reinterpret_cast<Writer*>(self);
    PyObject *fspath, *preamble;
    if (!PyArg_ParseTuple(args, "O&O:reopen", PyUnicode_FSConverter, &fspath, &preamble)) return nullptr;
    if (!w->forked) {
        Py_DECREF(fspath);
        PyErr_SetString(g.recording_error, "StreamWriter.reopen is for a forked child; this writer belongs to this process");
        return nullptr;
    }
    if (!PyDict_CheckExact(preamble)) {
        Py_DECREF(fspath);
        PyObject* name = PyObject_CallOneArg(g.type_name, reinterpret_cast<PyObject*>(Py_TYPE(preamble)));
        if (name) { PyErr_Format(PyExc_TypeError, "preamble must be a dict, not %U", name); Py_DECREF(name); }
        return nullptr;
    }
    PyObject* upath = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(fspath));
    if (!upath) { Py_DECREF(fspath); return nullptr; }
    Out pre;
    w->intern = false;
    int rc = encode_top(w, pre, preamble);
    w->intern = true;
    if (rc) { Py_DECREF(fspath); Py_DECREF(upath); return nullptr; }
    Out head;
    if (!head.reserve(HEADER_SIZE + FRAME_HEADER_SIZE)) { Py_DECREF(fspath); Py_DECREF(upath); return PyErr_NoMemory(); }
    head.put(MAGIC, 8);
    uint32_t v = FORMAT_VERSION, len = static_cast<uint32_t>(pre.size), crc = crc32(pre.data, pre.size);
    head.put(&v, 4);
    head.put(&len, 4);
    head.put(&crc, 4);
    int fd, err = 0;
    const char* cpath = PyBytes_AS_STRING(fspath);
    Py_BEGIN_ALLOW_THREADS
    fd = -1;
    err = create_recording(cpath, &fd);
    if (!err) {
        if (::fchmod(fd, 0600) < 0) err = errno;
        struct iovec iov[2] = {{head.data, head.size}, {pre.data, pre.size}};
        if (!err) err = write_all(fd, iov, 2);
        if (err) ::close(fd);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(fspath);
    if (err) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, upath);
        Py_DECREF(upath);
        return nullptr;
    }
    // Live bindings in binding order; they become 0..k-1 in the new file.
    std::vector<Binding> live;
    live.reserve(w->core.bindings.size());
    for (auto& kv : w->core.bindings) live.push_back(kv.second);
    std::sort(live.begin(), live.end(), [](const Binding& a, const Binding& b) { return a.index < b.index; });
    auto interval = w->core.interval;
    size_t buffer_size = w->core.buffer_size;
    bool compress = w->core.compress;
    w->core.bindings.clear();   // references move into `live`
    (void)w->core.flusher.release();
    new (&w->core) Core();      // abandon the parent's Core (see above)
    w->core.interval = interval;
    w->core.buffer_size = buffer_size;
    w->core.compress = compress;
    Out& o = w->core.buf;
    if (!o.reserve(3 * live.size() + 1)) {
        for (auto& b : live) Py_DECREF(b.obj);
        ::close(fd);
        Py_DECREF(upath);
        return PyErr_NoMemory();
    }
    uint64_t i = 0;
    for (auto& b : live) {
        o.put1(0xc7); o.put1(0); o.put1(EXT_NEW_BINDING);
        w->core.bindings.emplace(b.obj, Binding{i++, b.obj});
    }
    w->next_binding = i;
    w->events = i;
    PyDict_Clear(w->strings);
    Py_CLEAR(w->last_thread);
    w->has_thread = false;
    w->owner = 0;
    w->closed = false;
    w->pid = static_cast<long>(getpid());
    Py_SETREF(w->path, upath);
    w->core.fd = fd;
    w->core.written = head.size + pre.size;
    if (i > 0) {
        // The inherited bindings reach the disk now: a child killed before
        // the flusher's first round still leaves a replayable start.
        std::unique_lock<std::mutex> lk(w->core.mu);
        flush_locked(w->core, lk);
    }
    try {
        BlockAllSignals blocked;
        w->core.flusher = std::make_unique<std::thread>(flusher_main, &w->core);
    } catch (const std::exception& e) {
        ::close(fd);
        w->core.fd = -1;
        PyErr_Format(g.recording_error, "cannot start the stream flusher thread: %s", e.what());
        return nullptr;
    }
    w->forked = false;
    if (w->term_wanted && term::owner == nullptr) term::arm(w);
    return PyLong_FromUnsignedLongLong(i);
}

}  // namespace

PyObject* make_writer_type(PyObject* module) {
    static PyType_Spec spec = {
        "retracesoftware.stream._stream.StreamWriter", sizeof(Writer), 0,
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, writer_slots,
    };
    return PyType_FromModuleAndSpec(module, &spec, nullptr);
}

}  // namespace retrace_stream
