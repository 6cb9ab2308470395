// The StreamWriter's state: the Python object (Writer), the buffers and
// encoder tables it shares with its flusher thread (Core), and the
// per-thread cache of the logical thread id. Locking: writer.cpp.
// Included by writer.cpp only: the writer is one translation unit, so the
// write path inlines across these parts as it did when they were one file.
#pragma once
#include "common.h"
#include "zstd.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace retrace_stream {
namespace {

struct Binding {
    uint64_t index;
    PyObject* obj;  // strong
};

struct Core {
    std::mutex mu;       // the flusher's wait (cv), `stop`; taken before io_mu and wlock
    std::mutex io_mu;
    std::condition_variable cv;
    // Guards `buf` and the encoder tables: a Python thread holds it for a
    // whole write() (writer.cpp `enter`); the flusher, flush() and close()
    // hold it only to swap `buf` out. A spin lock, not a mutex: one xchg to
    // take and a plain store to release is what a recorded call pays (a
    // std::mutex's lock and unlock were ~17 ns of the ~45 ns it adds).
    std::atomic<int> wlock{0};
    std::atomic<bool> full{false};  // buf reached buffer_size: the flusher's wake-up reason
    Out buf;     // guarded by wlock
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
    std::unordered_map<PyObject*, Binding> bindings;   // guarded by wlock (and the GIL)
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

}  // namespace
}  // namespace retrace_stream
