// StreamWriter, the Python type: locking, the write path, bindings, flush,
// close, fork and reopen. Its parts, one translation unit (included below):
//   writer_state.h    Writer, Core (buffers and encoder tables), the thread-id cache
//   writer_encoder.h  Python values -> msgpack, byte-for-byte the same as stream/_python.py
//   writer_flusher.h  frames to the file from a background flusher thread
//   writer_sigterm.h  flush_on_sigterm(): a SIGTERM'd process keeps its events
//
// Locking (GIL rules):
//  * `wlock` (a spin lock: one xchg to take, a store to release) guards the
//    event buffer and encoder tables. A Python thread takes it for a whole
//    write() call, possibly across calls into Python (hooks, reduce_value)
//    that release the GIL. To never deadlock against a thread that holds it
//    and waits for the GIL, it is tried first and otherwise waited for with
//    the GIL released.
//  * The flusher thread is not a Python thread: it never touches a Python
//    object and never needs the GIL. It sleeps on `cv` under `mu`, and takes
//    `io_mu` then `wlock` (order: mu -> io_mu -> wlock) only to swap the
//    buffer out; frames reach the disk in order under `io_mu`. A write holds
//    only `wlock`, and wakes the flusher (`full`) after releasing it.
//  * A write never releases the GIL merely because the flusher is swapping
//    buffers (it spins briefly first, `enter`), and never blocks on `io_mu`
//    while a frame is being written (`check` reads the atomic `has_error`).
//    A write is often inside the program's critical section (a recorded lock
//    acquire writes its SYNC while holding the lock): dropping the GIL there
//    lets another thread block on that lock, and once threads sleep on a
//    lock every release is a handoff between threads (a convoy) — plain
//    CPython never drops the GIL inside `with lock: counter += 1`.
#include "common.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <string>
#include <structmember.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

#include "writer_state.h"
#include "writer_encoder.h"
#include "writer_flusher.h"
#include "writer_sigterm.h"

namespace retrace_stream {

namespace {

// ------------------------------------------------------------ Python glue

// Try to take `wlock` for a few microseconds with the GIL held: the flusher
// holds it only to swap buffers. A Python thread holding it across a hook
// that released the GIL keeps it longer; then the caller gives up the GIL.
bool spin_lock(Core& c) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    for (;;) {
        for (int i = 0; i < 64; i++) {
            cpu_relax();
            if (c.wlock.load(std::memory_order_relaxed) == 0 && wlock_try(c)) return true;
        }
        if (std::chrono::steady_clock::now() >= deadline) return false;
    }
}

// Take core.wlock the GIL-safe way; refuse re-entrant use.
inline bool enter(Writer* w) {
    unsigned long me = PyThread_get_thread_ident();
    if (w->owner == me) {
        PyErr_SetString(PyExc_RuntimeError,
                        "StreamWriter used re-entrantly (from a hook or thread_id called by this same write)");
        return false;
    }
    if (!wlock_try(w->core) && !spin_lock(w->core)) {
        Py_BEGIN_ALLOW_THREADS
        wlock_wait(w->core);
        Py_END_ALLOW_THREADS
    }
    w->owner = me;
    return true;
}

inline void leave(Writer* w) {
    w->owner = 0;
    wlock_release(w->core);
}

// The buffer reached buffer_size: wake the flusher. Under `mu` when it is
// free, so the wake-up cannot fall between the flusher's test and its wait;
// when another thread holds it (a flush under way), the flag alone (the
// flusher finds it within its interval at the latest).
void wake_flusher(Core& c) {
    std::unique_lock<std::mutex> lk(c.mu, std::try_to_lock);
    c.full.store(true, std::memory_order_relaxed);
    if (lk.owns_lock()) lk.unlock();
    c.cv.notify_one();
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
        if (full) wake_flusher(w->core);
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
