// The StreamWriter's file I/O: frames (compressed or not) written in
// order by a background flusher thread that never takes the GIL.
// Included by writer.cpp only: the writer is one translation unit, so the
// write path inlines across these parts as it did when they were one file.
#pragma once
#include "writer_state.h"

#include <cerrno>
#include <csignal>
#include <pthread.h>
#include <sys/uio.h>
#include <thread>
#include <unistd.h>

namespace retrace_stream {
namespace {


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

inline bool wlock_try(Core& c) { return c.wlock.exchange(1, std::memory_order_acquire) == 0; }
inline void wlock_release(Core& c) { c.wlock.store(0, std::memory_order_release); }

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Take `wlock` without the GIL (the flusher; a Python thread that gave the
// GIL up): a writer holds it for one write, or across a hook of that write
// that released the GIL (then it needs the GIL back first, which this
// thread does not hold): spin briefly, then yield, then sleep in short
// steps.
void wlock_wait(Core& c) {
    for (int i = 0;; i++) {
        if (c.wlock.load(std::memory_order_relaxed) == 0 && wlock_try(c)) return;
        if (i < 256) {
            cpu_relax();
        } else if (i < 512) {
            std::this_thread::yield();
        } else {
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }
}

// Caller holds `lk` on core.mu; returns with it held again.
void flush_locked(Core& c, std::unique_lock<std::mutex>& lk) {
    if (c.fd < 0) return;
    // Lock order: mu, io_mu, wlock. A frame another flush took (the
    // flusher thread's) may still be on its way to the file: io_mu waits
    // for it, so that flush() returning means every event written before
    // it is in the file (a SIGKILL right after lost up to a whole buffer).
    std::unique_lock<std::mutex> io(c.io_mu);
    wlock_wait(c);
    c.full.store(false, std::memory_order_relaxed);
    if (c.buf.size == 0) {
        wlock_release(c);
        return;
    }
    c.spare.swap(c.buf);
    c.buf.size = 0;
    wlock_release(c);
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
        c->cv.wait_for(lk, c->interval, [c] { return c->stop || c->full.load(std::memory_order_relaxed); });
        flush_locked(*c, lk);
        if (c->stop) return;
    }
}

}  // namespace
}  // namespace retrace_stream
