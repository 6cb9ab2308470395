// The StreamWriter's SIGTERM subsystem (flush_on_sigterm, below).
// Included by writer.cpp only: the writer is one translation unit, so the
// write path inlines across these parts as it did when they were one file.
#pragma once
#include "writer_flusher.h"

#include <csignal>
#include <pthread.h>
#include <unistd.h>

namespace retrace_stream {
namespace {

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

}  // namespace
}  // namespace retrace_stream
