// ReplayCallGateway: a replayed call in one native step, the mirror of
// RecordCallGateway.
//
//   ReplayCallGateway(gate, target, take, thread_id, turn, call_tag, name,
//                     result_tag, error_tag, slow, handover)
//
// Called while the gate's phase is INTERNAL and `turn.closed` is 0 (no other
// thread holds or reserves a turn, no failure):
//   fp = fingerprint(*args, **kwargs); phase := DISABLED;
//   got = take(thread_id(), call_tag, name, fp, result_tag, error_tag)
//   (thread_id() cached per thread: cached_thread_id below)
//   (the reader's take_call: None, or (ok, value, same_thread) with the
//   whole event consumed); when not same_thread: handover() (wakes the
//   thread whose turn it now is, notices the end of the tape);
//   phase := INTERNAL; return value, or raise it when not ok.
// take returning None (anything unusual: another thread's event, a
// binding, a callback, a STACK, a divergence, the end) or `turn.closed`:
// return slow(*args, **kwargs) -- the engine's Python path, which waits for
// its turn and reports divergences. In any other phase: target(...).
//
// GIL: held throughout the fast path (take never releases it between
// checking the head and consuming the event, so no other thread can read in
// between); TurnState is written only with the GIL held.
#include "utils.h"
#include "native_take.h"

#include <chrono>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace retrace::utils {

namespace {

PyTypeObject* TurnStateType = nullptr;

// One logical thread's wake-up permit (a binary semaphore): `wake` sets it,
// `wait` consumes it or times out. The permit is a PyThread lock held while
// there is no permit, so a wait is interruptible by signals as a Python
// lock acquire is (the main thread's Ctrl-C). `permit` mirrors the lock's
// state under `guard`, so two wakes never release it twice.
struct Waiter {
    PyThread_type_lock lock = nullptr;
    std::mutex guard;
    bool permit = false;
    Waiter() : lock(PyThread_allocate_lock()) {
        if (lock) PyThread_acquire_lock(lock, WAIT_LOCK);
    }
    ~Waiter() {
        if (lock) {
            if (permit) PyThread_acquire_lock(lock, WAIT_LOCK);  // freed unlocked either way
            PyThread_release_lock(lock);
            PyThread_free_lock(lock);
        }
    }
    Waiter(const Waiter&) = delete;
    Waiter& operator=(const Waiter&) = delete;
};

struct TurnCore {
    std::vector<std::unique_ptr<Waiter>> waiters;  // index = slots[tid]; only grown, with the GIL held
};

struct TurnStateObject {
    PyObject_HEAD
    Py_ssize_t closed;
    Py_ssize_t changes;    // bumped on every change of the sequencer's state (deadlock clock)
    Py_ssize_t draining;   // non-zero: every hand-over goes through `moved` (threads drain at exit)
    double native_wait;    // seconds a gateway waits for its turn natively before the Python path (0: never)
    PyObject* probe;       // the raw reader (.thread, .next_kind) or None
    PyObject* moved;       // () -> None: the sequencer's Python hand-over (the end of the tape), or None
    PyObject* slots;       // dict tid -> index into core.waiters
    TurnCore core;
};

PyObject* str_next_kind = nullptr;
PyObject* str_thread = nullptr;
PyObject* str_id = nullptr;
PyObject* str_async_next = nullptr;
PyObject* str_release = nullptr;

// The permit of logical thread `tid` (made on first use). GIL held;
// nullptr with an exception set (an unhashable tid).
Waiter* waiter_for(TurnStateObject* t, PyObject* tid) {
    PyObject* idx = PyDict_GetItemWithError(t->slots, tid);
    if (idx) return t->core.waiters[static_cast<size_t>(PyLong_AsSsize_t(idx))].get();
    if (PyErr_Occurred()) return nullptr;
    auto w = std::make_unique<Waiter>();
    if (!w->lock) {
        PyErr_SetString(PyExc_MemoryError, "TurnState: cannot allocate a lock");
        return nullptr;
    }
    PyObject* v = PyLong_FromSize_t(t->core.waiters.size());
    if (!v) return nullptr;
    int rc = PyDict_SetItem(t->slots, tid, v);
    Py_DECREF(v);
    if (rc < 0) return nullptr;
    t->core.waiters.push_back(std::move(w));
    return t->core.waiters.back().get();
}

void waiter_wake(Waiter* w) {
    std::lock_guard<std::mutex> g(w->guard);
    if (!w->permit) {
        w->permit = true;
        PyThread_release_lock(w->lock);
    }
}

// Wait for the permit, the GIL released; timeout < 0: no limit. 1 = woken
// (permit consumed), 0 = timed out, -1 = a signal handler raised.
int waiter_wait(Waiter* w, double timeout) {
    using Clock = std::chrono::steady_clock;
    Clock::time_point deadline{};
    PY_TIMEOUT_T us = -1;
    if (timeout >= 0) {
        us = static_cast<PY_TIMEOUT_T>(timeout * 1e6);
        deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout));
    }
    for (;;) {
        PyLockStatus r;
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(w->lock, us, 1);
        Py_END_ALLOW_THREADS
        if (r == PY_LOCK_ACQUIRED) {
            std::lock_guard<std::mutex> g(w->guard);
            w->permit = false;
            return 1;
        }
        if (r == PY_LOCK_FAILURE) return 0;
        // PY_LOCK_INTR: run the signal handlers (as Lock.acquire does), then wait on.
        if (Py_MakePendingCalls() < 0) return -1;
        if (timeout >= 0) {
            auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now()).count();
            if (left <= 0) return 0;
            us = static_cast<PY_TIMEOUT_T>(left);
        }
    }
}

PyObject* TurnState_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "TurnState() takes no arguments");
        return nullptr;
    }
    PyObject* slots = PyDict_New();
    if (!slots) return nullptr;
    auto* self = reinterpret_cast<TurnStateObject*>(type->tp_alloc(type, 0));
    if (!self) {
        Py_DECREF(slots);
        return nullptr;
    }
    self->closed = 0;
    self->changes = 0;
    self->draining = 0;
    self->native_wait = 0.0;
    self->probe = Py_NewRef(Py_None);
    self->moved = Py_NewRef(Py_None);
    self->slots = slots;
    new (&self->core) TurnCore();
    return reinterpret_cast<PyObject*>(self);
}

int TurnState_traverse(PyObject* op, visitproc visit, void* arg) {
    auto* self = reinterpret_cast<TurnStateObject*>(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->probe);
    Py_VISIT(self->moved);
    Py_VISIT(self->slots);
    return 0;
}

int TurnState_clear(PyObject* op) {
    auto* self = reinterpret_cast<TurnStateObject*>(op);
    Py_SETREF(self->probe, Py_NewRef(Py_None));
    Py_SETREF(self->moved, Py_NewRef(Py_None));
    return 0;
}

void TurnState_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<TurnStateObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    Py_CLEAR(self->probe);
    Py_CLEAR(self->moved);
    Py_CLEAR(self->slots);
    self->core.~TurnCore();
    tp->tp_free(op);
    Py_DECREF(tp);
}

// wait(tid, timeout=None) -> bool: block (GIL released) until `wake(tid)`
// (True; a wake that came first counts) or timeout seconds (False).
PyObject* TurnState_wait(PyObject* op, PyObject* const* args, Py_ssize_t nargs) {
    auto* self = reinterpret_cast<TurnStateObject*>(op);
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "wait(tid, timeout=None)");
        return nullptr;
    }
    double timeout = -1;
    if (nargs == 2 && args[1] != Py_None) {
        timeout = PyFloat_AsDouble(args[1]);
        if (timeout == -1 && PyErr_Occurred()) return nullptr;
        if (timeout < 0) timeout = 0;
    }
    Waiter* w = waiter_for(self, args[0]);
    if (!w) return nullptr;
    Py_INCREF(op);  // the permit lives as long as the TurnState; kept alive while waiting
    int r = waiter_wait(w, timeout);
    Py_DECREF(op);
    if (r < 0) return nullptr;
    return PyBool_FromLong(r);
}

PyObject* TurnState_wake(PyObject* op, PyObject* tid) {
    Waiter* w = waiter_for(reinterpret_cast<TurnStateObject*>(op), tid);
    if (!w) return nullptr;
    waiter_wake(w);
    Py_RETURN_NONE;
}

PyObject* TurnState_wake_all(PyObject* op, PyObject*) {
    for (auto& w : reinterpret_cast<TurnStateObject*>(op)->core.waiters) waiter_wake(w.get());
    Py_RETURN_NONE;
}

// The head of the tape moved away from the caller's thread: wake the thread
// whose turn it is now. Natively when the probe says which; through `moved`
// (Python) at the end of the tape, while draining, or when the probe cannot
// tell (no probe, damage, an odd thread id). 0 or -1 with an exception.
int turn_handover(TurnStateObject* t) {
    t->changes++;
    if (t->draining || t->probe == Py_None) goto python;
    {
        PyObject* kind = PyObject_GetAttr(t->probe, str_next_kind);
        if (!kind) {
            PyErr_Clear();
            goto python;
        }
        bool ended = kind == Py_None;
        Py_DECREF(kind);
        if (ended) goto python;
        // An asynchronous event (a signal) at the head: the Python hand-over
        // arms its position search (stream reader's async_next, if it has one).
        PyObject* async_next = PyObject_GetAttr(t->probe, str_async_next);
        if (!async_next) {
            PyErr_Clear();
        } else {
            int is_async = PyObject_IsTrue(async_next);
            Py_DECREF(async_next);
            if (is_async != 0) {
                PyErr_Clear();
                goto python;
            }
        }
        PyObject* head = PyObject_GetAttr(t->probe, str_thread);
        if (!head) {
            PyErr_Clear();
            goto python;
        }
        if (head == Py_None) {
            Py_DECREF(head);
            goto python;
        }
        Waiter* w = waiter_for(t, head);
        Py_DECREF(head);
        if (!w) {
            PyErr_Clear();
            goto python;
        }
        waiter_wake(w);
        return 0;
    }
python:
    if (t->moved == Py_None) return 0;
    PyObject* r = PyObject_CallNoArgs(t->moved);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

PyObject* TurnState_handover(PyObject* op, PyObject*) {
    if (turn_handover(reinterpret_cast<TurnStateObject*>(op)) < 0) return nullptr;
    Py_RETURN_NONE;
}

// A replayed call or sync point of thread `me` found another thread's event
// at the head: wait natively for this thread's turn (GIL released, woken by
// the hand-over), so the retried native step takes the event without any
// Python frame. 1 = woken: retry; 0 = take the Python path (the head is
// ours but unusual, the end of the tape, a turn held, no probe, or
// native_wait seconds without a wake-up: the Python sequencer then waits,
// and reports a deadlock); -1 = error.
int turn_wait_native(TurnStateObject* t, PyObject* me) {
    if (t->closed || t->native_wait <= 0 || t->probe == Py_None || t->draining) return 0;
    PyObject* kind = PyObject_GetAttr(t->probe, str_next_kind);
    if (!kind) {
        PyErr_Clear();
        return 0;
    }
    bool ended = kind == Py_None;
    Py_DECREF(kind);
    if (ended) return 0;
    PyObject* head = PyObject_GetAttr(t->probe, str_thread);
    if (!head) {
        PyErr_Clear();
        return 0;
    }
    int mine = head == Py_None ? 1 : PyObject_RichCompareBool(head, me, Py_EQ);
    Py_DECREF(head);
    if (mine != 0) {
        if (mine < 0) PyErr_Clear();
        return 0;
    }
    Waiter* w = waiter_for(t, me);
    if (!w) {
        PyErr_Clear();
        return 0;
    }
    PyObject* keep = Py_NewRef(reinterpret_cast<PyObject*>(t));
    int r = waiter_wait(w, t->native_wait);
    Py_DECREF(keep);
    if (r > 0 && t->closed) return 0;
    return r;
}

PyMethodDef TurnState_methods[] = {
    {"wait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(TurnState_wait)), METH_FASTCALL,
     "wait(tid, timeout=None) -> bool: block (GIL released) until wake(tid) (True) or the timeout (False)"},
    {"wake", TurnState_wake, METH_O, "wake(tid): give thread tid its permit (wakes its wait)"},
    {"wake_all", TurnState_wake_all, METH_NOARGS, "wake every thread that ever waited"},
    {"handover", TurnState_handover, METH_NOARGS,
     "the head moved: wake the thread whose turn it is (through moved() at the end / while draining)"},
    {nullptr, nullptr, 0, nullptr},
};

PyMemberDef TurnState_members[] = {
    {"closed", RETRACE_T_PYSSIZET, offsetof(TurnStateObject, closed), 0,
     "non-zero: replayed calls take the slow path (a turn is held or reserved, or the replay failed)"},
    {"changes", RETRACE_T_PYSSIZET, offsetof(TurnStateObject, changes), 0,
     "bumped on every sequencer state change (the deadlock clock)"},
    {"draining", RETRACE_T_PYSSIZET, offsetof(TurnStateObject, draining), 0,
     "non-zero: every hand-over goes through moved()"},
    {"native_wait", RETRACE_T_DOUBLE, offsetof(TurnStateObject, native_wait), 0,
     "seconds a gateway waits natively for its turn before the Python path (0: never)"},
    {"probe", RETRACE_T_OBJECT_EX, offsetof(TurnStateObject, probe), 0,
     "the raw reader (.thread, .next_kind) read by native hand-overs, or None"},
    {"moved", RETRACE_T_OBJECT_EX, offsetof(TurnStateObject, moved), 0,
     "() -> None: the Python hand-over (end of tape, draining), or None"},
    {nullptr, 0, 0, 0, nullptr},
};

PyType_Slot TurnState_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(TurnState_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(TurnState_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(TurnState_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(TurnState_clear)},
    {Py_tp_members, TurnState_members},
    {Py_tp_methods, TurnState_methods},
    {Py_tp_doc, const_cast<char*>("TurnState(): the replay sequencer's native part: the fast-path flag (closed), "
                                  "per-thread wake-up permits and the hand-over (utils/README.md).")},
    {0, nullptr},
};

PyType_Spec TurnState_spec = {
    "retracesoftware.utils._utils.TurnState", sizeof(TurnStateObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE, TurnState_slots,
};

// The calling thread's logical id, cached per OS thread: the gateways ask
// their thread_id() callable once per thread, callable and epoch (a Python
// call, ~40 ns, was a quarter of a replayed call). thread_ids_changed()
// bumps the epoch; the install layer calls it whenever it gives, changes or
// takes a thread's id (stream.thread_ids_changed). The cache holds strong
// references (so a freed callable's address cannot be mistaken for it); a
// thread's last entry is not released when it ends (no GIL then): one
// reference to the callable and one small id.
uint64_t g_thread_epoch = 1;
struct TidCache {
    PyObject* fn;
    uint64_t epoch;
    PyObject* tid;
};
thread_local TidCache tl_tid_cache RETRACE_TLS_IE = {nullptr, 0, nullptr};

PyObject* cached_thread_id(PyObject* fn) {
    TidCache& c = tl_tid_cache;
    if (c.fn == fn && c.epoch == g_thread_epoch && c.tid) return Py_NewRef(c.tid);
    PyObject* tid = PyObject_CallNoArgs(fn);
    if (!tid) return nullptr;
    Py_XSETREF(c.tid, Py_NewRef(tid));
    Py_XSETREF(c.fn, Py_NewRef(fn));
    c.epoch = g_thread_epoch;
    return tid;
}

PyObject* thread_ids_changed(PyObject*, PyObject*) {
    g_thread_epoch++;
    Py_RETURN_NONE;
}

PyMethodDef thread_id_methods[] = {
    {"thread_ids_changed", thread_ids_changed, METH_NOARGS,
     "thread_ids_changed(): a thread's logical id was given, changed or taken; the replay gateways ask "
     "their thread_id() again (call with the GIL held)."},
    {nullptr, nullptr, 0, nullptr},
};

struct ReplayCallGatewayObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    GateObject* gate;
    PyObject* target;
    PyObject* take;
    PyObject* thread_id;
    TurnStateObject* turn;
    PyObject* call_tag;
    PyObject* name;
    PyObject* result_tag;
    PyObject* error_tag;
    PyObject* slow;
    PyObject* handover;
    PyObject* fp_noargs;
    PyObject* weakreflist;
};

PyObject* ReplayCallGateway_vectorcall(PyObject* op, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* self = reinterpret_cast<ReplayCallGatewayObject*>(op);
    GateObject* gate = self->gate;
    if (gate_get(gate) != INTERNAL) return PyObject_Vectorcall(self->target, args, nargsf, kwnames);
    if (self->turn->closed) return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);

    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject* fp;
    if (nargs == 0 && !kwnames) {
        fp = Py_NewRef(self->fp_noargs);
    } else {
        fp = fingerprint_vector(args, nargs, kwnames);
        if (!fp) return nullptr;
    }
    gate_set(gate, DISABLED);
    PyObject* tid = cached_thread_id(self->thread_id);
    if (!tid) {
        gate_set(gate, INTERNAL);
        Py_DECREF(fp);
        return nullptr;
    }
    PyObject* stack[6] = {tid, self->call_tag, self->name, fp, self->result_tag, self->error_tag};
    PyObject* got;
    for (;;) {
        got = PyObject_Vectorcall(self->take, stack, 6, nullptr);
        if (!got || got != Py_None) break;
        Py_DECREF(got);
        // Another thread's event at the head: wait for this thread's turn
        // natively, then try again (no Python frame when it is a call).
        int w = turn_wait_native(self->turn, tid);
        if (w > 0) continue;
        Py_DECREF(tid);
        Py_DECREF(fp);
        gate_set(gate, INTERNAL);
        if (w < 0) return nullptr;
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    Py_DECREF(tid);
    Py_DECREF(fp);
    if (!got) {
        gate_set(gate, INTERNAL);
        return nullptr;
    }
    if (!PyTuple_CheckExact(got) || PyTuple_GET_SIZE(got) != 3) {
        Py_DECREF(got);
        gate_set(gate, INTERNAL);
        PyErr_SetString(PyExc_TypeError, "ReplayCallGateway: take() must return None or (ok, value, same_thread)");
        return nullptr;
    }
    if (PyTuple_GET_ITEM(got, 2) != Py_True) {
        int rc;
        if (self->handover == Py_None) {
            rc = turn_handover(self->turn);
        } else {
            PyObject* r = PyObject_CallNoArgs(self->handover);
            Py_XDECREF(r);
            rc = r ? 0 : -1;
        }
        if (rc < 0) {
            Py_DECREF(got);
            gate_set(gate, INTERNAL);
            return nullptr;
        }
    }
    gate_set(gate, INTERNAL);
    PyObject* value = Py_NewRef(PyTuple_GET_ITEM(got, 1));
    bool ok = PyTuple_GET_ITEM(got, 0) == Py_True;
    Py_DECREF(got);
    if (ok) return value;
    if (PyExceptionInstance_Check(value)) {
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(value)), value);
    } else {
        PyErr_Format(PyExc_TypeError, "recorded error is not an exception: %R", value);
    }
    Py_DECREF(value);
    return nullptr;
}

PyObject* ReplayCallGateway_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"gate", "target", "take", "thread_id", "turn", "call_tag", "name",
                                   "result_tag", "error_tag", "slow", "handover", nullptr};
    PyObject *gate, *target, *take, *thread_id, *turn, *call_tag, *name, *result_tag, *error_tag, *slow, *handover;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOOOOOO:ReplayCallGateway", const_cast<char**>(kwlist),
                                     &gate, &target, &take, &thread_id, &turn, &call_tag, &name, &result_tag,
                                     &error_tag, &slow, &handover))
        return nullptr;
    if (!PyObject_TypeCheck(gate, GateType)) {
        PyErr_Format(PyExc_TypeError, "gate must be a Gate, got %.200s", Py_TYPE(gate)->tp_name);
        return nullptr;
    }
    if (!PyObject_TypeCheck(turn, TurnStateType)) {
        PyErr_Format(PyExc_TypeError, "turn must be a TurnState, got %.200s", Py_TYPE(turn)->tp_name);
        return nullptr;
    }
    if (!PyCallable_Check(target) || !PyCallable_Check(take) || !PyCallable_Check(thread_id) ||
        !PyCallable_Check(slow) || (handover != Py_None && !PyCallable_Check(handover))) {
        PyErr_SetString(PyExc_TypeError, "target, take, thread_id and slow must be callable, handover callable or None");
        return nullptr;
    }
    PyObject* fp = fingerprint_vector(nullptr, 0, nullptr);
    if (!fp) return nullptr;
    auto* self = reinterpret_cast<ReplayCallGatewayObject*>(type->tp_alloc(type, 0));
    if (!self) {
        Py_DECREF(fp);
        return nullptr;
    }
    self->vectorcall = ReplayCallGateway_vectorcall;
    self->gate = reinterpret_cast<GateObject*>(Py_NewRef(gate));
    self->target = Py_NewRef(target);
    self->take = Py_NewRef(take);
    self->thread_id = Py_NewRef(thread_id);
    self->turn = reinterpret_cast<TurnStateObject*>(Py_NewRef(turn));
    self->call_tag = Py_NewRef(call_tag);
    self->name = Py_NewRef(name);
    self->result_tag = Py_NewRef(result_tag);
    self->error_tag = Py_NewRef(error_tag);
    self->slow = Py_NewRef(slow);
    self->handover = Py_NewRef(handover);
    self->fp_noargs = fp;
    self->weakreflist = nullptr;
    return reinterpret_cast<PyObject*>(self);
}

int ReplayCallGateway_traverse(PyObject* op, visitproc visit, void* arg) {
    auto* self = reinterpret_cast<ReplayCallGatewayObject*>(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(reinterpret_cast<PyObject*>(self->gate));
    Py_VISIT(self->target);
    Py_VISIT(self->take);
    Py_VISIT(self->thread_id);
    Py_VISIT(reinterpret_cast<PyObject*>(self->turn));
    Py_VISIT(self->call_tag);
    Py_VISIT(self->name);
    Py_VISIT(self->result_tag);
    Py_VISIT(self->error_tag);
    Py_VISIT(self->slow);
    Py_VISIT(self->handover);
    return 0;
}

int ReplayCallGateway_clear(PyObject* op) {
    auto* self = reinterpret_cast<ReplayCallGatewayObject*>(op);
    // Stay callable (fields are read unchecked): callables become None.
    Py_SETREF(self->target, Py_NewRef(Py_None));
    Py_SETREF(self->take, Py_NewRef(Py_None));
    Py_SETREF(self->thread_id, Py_NewRef(Py_None));
    Py_SETREF(self->slow, Py_NewRef(Py_None));
    Py_SETREF(self->handover, Py_NewRef(Py_None));
    return 0;
}

void ReplayCallGateway_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<ReplayCallGatewayObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->target);
    Py_CLEAR(self->take);
    Py_CLEAR(self->thread_id);
    Py_CLEAR(self->turn);
    Py_CLEAR(self->call_tag);
    Py_CLEAR(self->name);
    Py_CLEAR(self->result_tag);
    Py_CLEAR(self->error_tag);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->handover);
    Py_CLEAR(self->fp_noargs);
    tp->tp_free(op);
    Py_DECREF(tp);
}

PyObject* ReplayCallGateway_descr_get(PyObject* self, PyObject* obj, PyObject*) {
    if (obj == nullptr) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

PyObject* ReplayCallGateway_get_name(PyObject* op, void*) {
    PyObject* name = PyObject_GetAttrString(reinterpret_cast<ReplayCallGatewayObject*>(op)->target, "__name__");
    if (!name) {
        PyErr_Clear();
        return PyUnicode_FromString("ReplayCallGateway");
    }
    return name;
}
PyObject* ReplayCallGateway_get_wrapped(PyObject* op, void*) {
    return Py_NewRef(reinterpret_cast<ReplayCallGatewayObject*>(op)->target);
}
PyObject* ReplayCallGateway_repr(PyObject* op) {
    return PyUnicode_FromFormat("<ReplayCallGateway %R for %R>", reinterpret_cast<ReplayCallGatewayObject*>(op)->name,
                                reinterpret_cast<ReplayCallGatewayObject*>(op)->target);
}

PyGetSetDef ReplayCallGateway_getset[] = {
    {"__wrapped__", ReplayCallGateway_get_wrapped, nullptr, "the target", nullptr},
    {"__name__", ReplayCallGateway_get_name, nullptr, "the target's __name__", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

#define RCG_MEMBER(field) \
    {#field, RETRACE_T_OBJECT_EX, offsetof(ReplayCallGatewayObject, field), RETRACE_READONLY, nullptr}
PyMemberDef ReplayCallGateway_members[] = {
    RCG_MEMBER(gate), RCG_MEMBER(target), RCG_MEMBER(take), RCG_MEMBER(thread_id), RCG_MEMBER(turn),
    RCG_MEMBER(call_tag), RCG_MEMBER(name), RCG_MEMBER(result_tag), RCG_MEMBER(error_tag), RCG_MEMBER(slow),
    RCG_MEMBER(handover),
    {"__vectorcalloffset__", RETRACE_T_PYSSIZET, offsetof(ReplayCallGatewayObject, vectorcall), RETRACE_READONLY,
     nullptr},
    {"__weaklistoffset__", RETRACE_T_PYSSIZET, offsetof(ReplayCallGatewayObject, weakreflist), RETRACE_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr},
};
#undef RCG_MEMBER

PyType_Slot ReplayCallGateway_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(ReplayCallGateway_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(ReplayCallGateway_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(ReplayCallGateway_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(ReplayCallGateway_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(ReplayCallGateway_descr_get)},
    {Py_tp_members, ReplayCallGateway_members},
    {Py_tp_getset, ReplayCallGateway_getset},
    {Py_tp_repr, reinterpret_cast<void*>(ReplayCallGateway_repr)},
    {Py_tp_doc, const_cast<char*>("ReplayCallGateway(gate, target, take, thread_id, turn, call_tag, name, "
                                  "result_tag, error_tag, slow, handover): a replayed call in one native step "
                                  "(utils/README.md).")},
    {0, nullptr},
};

PyType_Spec ReplayCallGateway_spec = {
    "retracesoftware.utils._utils.ReplayCallGateway", sizeof(ReplayCallGatewayObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    ReplayCallGateway_slots,
};

// ------------------------------------------------------------ ReplaySyncGateway
//
//   ReplaySyncGateway(gate, target, take, thread_id, turn, tag, try_now, returns, slow)
//
// A replayed lock acquire (a sync point, proxy/threads.py SyncPoints) in one
// native step: in the INTERNAL phase with `turn.closed` 0,
//   mine = args[0]._id; phase := DISABLED;
//   got = take(thread_id(), tag, accept)     (the reader's take_event)
// where accept(value) (checked with this thread's `tag value` at the head)
// is: False when a turn is held; True for a recorded failure (False); False
// when value is neither True nor `mine` (the slow path reports the other
// lock); else try_now(args[0], False) -- the real lock taken without
// blocking -- and whether it succeeded. With `real` (an attribute name),
// try_now(getattr(args[0], real), False); a try_now that is a C method
// descriptor of the real lock's type (`_thread.lock.acquire`) is then
// called as C with a cached (False,) (no wrapper, no argument tuple). So
// the event and the real acquire happen together. got None: the real lock is released again if it was
// taken, then (another thread's event at the head) wait natively for this
// thread's turn and try again, or slow(*args, **kwargs). Else hand the turn
// over when the head left this thread and return False (a recorded failure)
// or `returns`. In any other phase: target(*args, **kwargs).

PyTypeObject* SyncAcceptType = nullptr;

// How a gateway takes the real lock without blocking: try_now, the
// attribute of args[0] it takes (or null: args[0] itself), and try_now's C
// function when it is a METH_VARARGS|METH_KEYWORDS method descriptor (of
// `type`), called with the cached (False,) then.
struct TryNow {
    PyObject* try_now;
    PyObject* real;
    PyCFunctionWithKeywords meth;
    PyTypeObject* type;
};

PyObject* tuple_false = nullptr;

// try_now's answer for `lock`: 1 taken, 0 not, -1 error.
int try_now_take(const TryNow& t, PyObject* lock) {
    PyObject* owned = nullptr;
    if (t.real) {
        owned = PyObject_GetAttr(lock, t.real);
        if (!owned) return -1;
        lock = owned;
    }
    PyObject* r;
    if (t.meth && PyObject_TypeCheck(lock, t.type)) {
        r = t.meth(lock, tuple_false, nullptr);
    } else {
        PyObject* call[2] = {lock, Py_False};
        r = PyObject_Vectorcall(t.try_now, call, 2, nullptr);
    }
    Py_XDECREF(owned);
    if (!r) return -1;
    int yes = r == Py_True ? 1 : r == Py_False ? 0 : PyObject_IsTrue(r);
    Py_DECREF(r);
    return yes;
}

void try_now_init(TryNow& t, PyObject* try_now, PyObject* real) {
    t.try_now = try_now;
    t.real = real;
    t.meth = nullptr;
    t.type = nullptr;
    if (Py_IS_TYPE(try_now, &PyMethodDescr_Type)) {
        auto* d = reinterpret_cast<PyMethodDescrObject*>(try_now);
        if (d->d_method->ml_flags == (METH_VARARGS | METH_KEYWORDS)) {
            auto fn = reinterpret_cast<void (*)(void)>(d->d_method->ml_meth);
            t.meth = reinterpret_cast<PyCFunctionWithKeywords>(fn);
            t.type = PyDescr_TYPE(d);
        }
    }
}

struct SyncAcceptObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    TurnStateObject* turn;
    PyObject* mine;
    PyObject* lock;
    TryNow try_now;  // a copy of the gateway's, its objects owned:
    PyObject* own_try;
    PyObject* own_real;
    bool taken;
};

PyObject* SyncAccept_vectorcall(PyObject* op, PyObject* const* args, size_t nargsf, PyObject*) {
    auto* self = reinterpret_cast<SyncAcceptObject*>(op);
    if (PyVectorcall_NARGS(nargsf) != 1) {
        PyErr_SetString(PyExc_TypeError, "accept(value)");
        return nullptr;
    }
    PyObject* value = args[0];
    if (self->turn->closed) Py_RETURN_FALSE;
    if (value == Py_False) Py_RETURN_TRUE;
    if (value != Py_True) {
        int eq = PyObject_RichCompareBool(value, self->mine, Py_EQ);
        if (eq < 0) return nullptr;
        if (!eq) Py_RETURN_FALSE;
    }
    int yes = try_now_take(self->try_now, self->lock);
    if (yes < 0) return nullptr;
    if (yes) self->taken = true;
    return PyBool_FromLong(yes);
}

void SyncAccept_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<SyncAcceptObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    Py_CLEAR(self->turn);
    Py_CLEAR(self->mine);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->own_try);
    Py_CLEAR(self->own_real);
    tp->tp_free(op);
    Py_DECREF(tp);
}

PyMemberDef SyncAccept_members[] = {
    {"__vectorcalloffset__", RETRACE_T_PYSSIZET, offsetof(SyncAcceptObject, vectorcall), RETRACE_READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

PyType_Slot SyncAccept_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(SyncAccept_dealloc)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_members, SyncAccept_members},
    {0, nullptr},
};

PyType_Spec SyncAccept_spec = {
    "retracesoftware.utils._utils._SyncAccept", sizeof(SyncAcceptObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_DISALLOW_INSTANTIATION, SyncAccept_slots,
};

struct ReplaySyncGatewayObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    GateObject* gate;
    PyObject* target;
    PyObject* take;
    PyObject* thread_id;
    TurnStateObject* turn;
    PyObject* tag;
    PyObject* try_now;
    PyObject* returns;
    PyObject* slow;
    PyObject* real;  // the attribute of args[0] try_now takes, or null
    TryNow tn;
    PyObject* weakreflist;
    // take as a C call (native_take.h) when `take` is a reader's bound
    // take_event that offers one: the reader (owned) and the call.
    PyObject* reader;
    const RetraceNativeTake* native;
};

// The state a native accept works on: the accept object's, on the stack.
struct SyncAcceptState {
    TurnStateObject* turn;
    PyObject* mine;
    PyObject* lock;
    const TryNow* try_now;
    bool taken;
};

// SyncAccept_vectorcall's meaning as a C accept (native_take.h).
int sync_accept_native(void* ctx, PyObject* value) {
    auto* st = static_cast<SyncAcceptState*>(ctx);
    if (st->turn->closed) return 0;
    if (value == Py_False) return 1;
    if (value != Py_True) {
        int eq = PyObject_RichCompareBool(value, st->mine, Py_EQ);
        if (eq <= 0) return eq;
    }
    int yes = try_now_take(*st->try_now, st->lock);
    if (yes > 0) st->taken = true;
    return yes;
}

// The native path of ReplaySyncGateway_vectorcall (after the phase and turn
// checks, with phase DISABLED and `mine` read): the same steps, with the
// reader called in C. Returns the result, or nullptr with *slow set when
// the Python path must run (no error), or nullptr with an error.
PyObject* replay_sync_native(ReplaySyncGatewayObject* self, PyObject* lock, PyObject* mine, PyObject* tid,
                             bool* slow) {
    SyncAcceptState st{self->turn, mine, lock, &self->tn, false};
    PyObject* value = nullptr;
    int same_thread = 0;
    for (;;) {
        st.taken = false;
        int rc = self->native->take_event(self->reader, tid, self->tag, sync_accept_native, &st, &value,
                                          &same_thread);
        if (rc < 0) return nullptr;
        if (rc == 1) break;
        if (st.taken) {  // taken, then the head moved while accept ran: undone
            PyObject* r = PyObject_CallMethodNoArgs(lock, str_release);
            if (!r) return nullptr;
            Py_DECREF(r);
        }
        int w = turn_wait_native(self->turn, tid);
        if (w < 0) return nullptr;
        if (w == 0) {
            if (PyErr_Occurred()) return nullptr;
            *slow = true;
            return nullptr;
        }
    }
    bool failed = value == Py_False;
    Py_DECREF(value);
    if (!same_thread && turn_handover(self->turn) < 0) return nullptr;
    return Py_NewRef(failed ? Py_False : self->returns);
}

PyObject* ReplaySyncGateway_vectorcall(PyObject* op, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* self = reinterpret_cast<ReplaySyncGatewayObject*>(op);
    GateObject* gate = self->gate;
    if (gate_get(gate) != INTERNAL) return PyObject_Vectorcall(self->target, args, nargsf, kwnames);
    if (self->turn->closed || PyVectorcall_NARGS(nargsf) < 1)
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    PyObject* mine = PyObject_GetAttr(args[0], str_id);
    if (!mine) return nullptr;
    gate_set(gate, DISABLED);
    PyObject* tid = cached_thread_id(self->thread_id);
    if (!tid) {
        Py_DECREF(mine);
        gate_set(gate, INTERNAL);
        return nullptr;
    }
    if (self->native) {
        bool slow = false;
        PyObject* out = replay_sync_native(self, args[0], mine, tid, &slow);
        Py_DECREF(mine);
        Py_DECREF(tid);
        gate_set(gate, INTERNAL);
        if (out || !slow) return out;
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    auto* accept = PyObject_New(SyncAcceptObject, SyncAcceptType);
    if (!accept) {
        Py_DECREF(mine);
        Py_DECREF(tid);
        gate_set(gate, INTERNAL);
        return nullptr;
    }
    accept->vectorcall = SyncAccept_vectorcall;
    accept->turn = reinterpret_cast<TurnStateObject*>(Py_NewRef(reinterpret_cast<PyObject*>(self->turn)));
    accept->mine = mine;
    accept->lock = Py_NewRef(args[0]);
    accept->try_now = self->tn;
    accept->own_try = Py_NewRef(self->tn.try_now);
    accept->own_real = Py_XNewRef(self->tn.real);
    accept->taken = false;
    PyObject* stack[3] = {tid, self->tag, reinterpret_cast<PyObject*>(accept)};
    PyObject* got;
    int w = 0;
    for (;;) {
        accept->taken = false;
        got = PyObject_Vectorcall(self->take, stack, 3, nullptr);
        if (got != Py_None) break;
        Py_DECREF(got);
        if (accept->taken) {  // taken, then the head moved while accept ran: undone
            PyObject* r = PyObject_CallMethodNoArgs(args[0], str_release);
            if (!r) {
                got = nullptr;
                break;
            }
            Py_DECREF(r);
        }
        w = turn_wait_native(self->turn, tid);
        if (w <= 0) {
            got = nullptr;
            break;
        }
    }
    Py_DECREF(tid);
    Py_DECREF(reinterpret_cast<PyObject*>(accept));
    if (!got) {
        gate_set(gate, INTERNAL);
        if (w < 0 || PyErr_Occurred()) return nullptr;
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    if (!PyTuple_CheckExact(got) || PyTuple_GET_SIZE(got) != 2) {
        Py_DECREF(got);
        gate_set(gate, INTERNAL);
        PyErr_SetString(PyExc_TypeError, "ReplaySyncGateway: take() must return None or (value, same_thread)");
        return nullptr;
    }
    if (PyTuple_GET_ITEM(got, 1) != Py_True && turn_handover(self->turn) < 0) {
        Py_DECREF(got);
        gate_set(gate, INTERNAL);
        return nullptr;
    }
    gate_set(gate, INTERNAL);
    bool failed = PyTuple_GET_ITEM(got, 0) == Py_False;
    Py_DECREF(got);
    return Py_NewRef(failed ? Py_False : self->returns);
}

PyObject* ReplaySyncGateway_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"gate", "target", "take", "thread_id", "turn", "tag", "try_now", "returns",
                                   "slow", "real", nullptr};
    PyObject *gate, *target, *take, *thread_id, *turn, *tag, *try_now, *returns, *slow, *real = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOOOO|$O:ReplaySyncGateway", const_cast<char**>(kwlist),
                                     &gate, &target, &take, &thread_id, &turn, &tag, &try_now, &returns, &slow, &real))
        return nullptr;
    if (real != Py_None && !PyUnicode_Check(real)) {
        PyErr_Format(PyExc_TypeError, "real must be an attribute name or None, got %.200s", Py_TYPE(real)->tp_name);
        return nullptr;
    }
    if (!PyObject_TypeCheck(gate, GateType)) {
        PyErr_Format(PyExc_TypeError, "gate must be a Gate, got %.200s", Py_TYPE(gate)->tp_name);
        return nullptr;
    }
    if (!PyObject_TypeCheck(turn, TurnStateType)) {
        PyErr_Format(PyExc_TypeError, "turn must be a TurnState, got %.200s", Py_TYPE(turn)->tp_name);
        return nullptr;
    }
    if (!PyCallable_Check(target) || !PyCallable_Check(take) || !PyCallable_Check(thread_id) ||
        !PyCallable_Check(try_now) || !PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "target, take, thread_id, try_now and slow must be callable");
        return nullptr;
    }
    auto* self = reinterpret_cast<ReplaySyncGatewayObject*>(type->tp_alloc(type, 0));
    if (!self) return nullptr;
    self->vectorcall = ReplaySyncGateway_vectorcall;
    self->gate = reinterpret_cast<GateObject*>(Py_NewRef(gate));
    self->target = Py_NewRef(target);
    self->take = Py_NewRef(take);
    self->thread_id = Py_NewRef(thread_id);
    self->turn = reinterpret_cast<TurnStateObject*>(Py_NewRef(turn));
    self->tag = Py_NewRef(tag);
    self->try_now = Py_NewRef(try_now);
    self->returns = Py_NewRef(returns);
    self->slow = Py_NewRef(slow);
    self->real = nullptr;
    if (real != Py_None) {
        self->real = Py_NewRef(real);
        PyUnicode_InternInPlace(&self->real);
    }
    try_now_init(self->tn, self->try_now, self->real);
    self->weakreflist = nullptr;
    self->reader = nullptr;
    self->native = nullptr;
    // take as a C call when it is a reader's take_event offering one.
    if (PyCFunction_Check(take) && PyCFunction_GET_SELF(take)) {
        PyObject* reader = PyCFunction_GET_SELF(take);
        PyObject* capsule = PyObject_GetAttrString(reader, "native_take_event");
        if (capsule && PyCapsule_IsValid(capsule, RETRACE_NATIVE_TAKE_NAME)) {
            auto* api = static_cast<const RetraceNativeTake*>(PyCapsule_GetPointer(capsule, RETRACE_NATIVE_TAKE_NAME));
            if (api && api->version >= 1) {
                self->native = api;
                self->reader = Py_NewRef(reader);
            }
        }
        Py_XDECREF(capsule);
        PyErr_Clear();
    }
    return reinterpret_cast<PyObject*>(self);
}

int ReplaySyncGateway_traverse(PyObject* op, visitproc visit, void* arg) {
    auto* self = reinterpret_cast<ReplaySyncGatewayObject*>(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(reinterpret_cast<PyObject*>(self->gate));
    Py_VISIT(self->target);
    Py_VISIT(self->take);
    Py_VISIT(self->thread_id);
    Py_VISIT(reinterpret_cast<PyObject*>(self->turn));
    Py_VISIT(self->tag);
    Py_VISIT(self->try_now);
    Py_VISIT(self->returns);
    Py_VISIT(self->slow);
    Py_VISIT(self->reader);
    return 0;
}

int ReplaySyncGateway_clear(PyObject* op) {
    auto* self = reinterpret_cast<ReplaySyncGatewayObject*>(op);
    Py_SETREF(self->target, Py_NewRef(Py_None));
    Py_SETREF(self->take, Py_NewRef(Py_None));
    Py_SETREF(self->thread_id, Py_NewRef(Py_None));
    Py_SETREF(self->try_now, Py_NewRef(Py_None));
    try_now_init(self->tn, self->try_now, self->real);
    Py_SETREF(self->slow, Py_NewRef(Py_None));
    self->native = nullptr;
    Py_CLEAR(self->reader);
    return 0;
}

void ReplaySyncGateway_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<ReplaySyncGatewayObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->target);
    Py_CLEAR(self->take);
    Py_CLEAR(self->thread_id);
    Py_CLEAR(self->turn);
    Py_CLEAR(self->tag);
    Py_CLEAR(self->try_now);
    Py_CLEAR(self->returns);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->real);
    Py_CLEAR(self->reader);
    tp->tp_free(op);
    Py_DECREF(tp);
}

PyObject* ReplaySyncGateway_get_name(PyObject* op, void*) {
    PyObject* name = PyObject_GetAttrString(reinterpret_cast<ReplaySyncGatewayObject*>(op)->target, "__name__");
    if (!name) {
        PyErr_Clear();
        return PyUnicode_FromString("ReplaySyncGateway");
    }
    return name;
}
PyObject* ReplaySyncGateway_get_wrapped(PyObject* op, void*) {
    return Py_NewRef(reinterpret_cast<ReplaySyncGatewayObject*>(op)->target);
}

PyObject* ReplaySyncGateway_get_native(PyObject* op, void*) {
    return PyBool_FromLong(reinterpret_cast<ReplaySyncGatewayObject*>(op)->native != nullptr);
}

PyObject* ReplaySyncGateway_get_real(PyObject* op, void*) {
    PyObject* real = reinterpret_cast<ReplaySyncGatewayObject*>(op)->real;
    return Py_NewRef(real ? real : Py_None);
}

PyGetSetDef ReplaySyncGateway_getset[] = {
    {"real", ReplaySyncGateway_get_real, nullptr, "the attribute of args[0] try_now takes, or None", nullptr},
    {"__wrapped__", ReplaySyncGateway_get_wrapped, nullptr, "the target", nullptr},
    {"native", ReplaySyncGateway_get_native, nullptr,
     "take is called in C (a reader's take_event offering native_take.h's call)", nullptr},
    {"__name__", ReplaySyncGateway_get_name, nullptr, "the target's __name__", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

#define RSG_MEMBER(field) \
    {#field, RETRACE_T_OBJECT_EX, offsetof(ReplaySyncGatewayObject, field), RETRACE_READONLY, nullptr}
PyMemberDef ReplaySyncGateway_members[] = {
    RSG_MEMBER(gate), RSG_MEMBER(target), RSG_MEMBER(take), RSG_MEMBER(thread_id), RSG_MEMBER(turn),
    RSG_MEMBER(tag), RSG_MEMBER(try_now), RSG_MEMBER(returns), RSG_MEMBER(slow),
    {"__vectorcalloffset__", RETRACE_T_PYSSIZET, offsetof(ReplaySyncGatewayObject, vectorcall), RETRACE_READONLY,
     nullptr},
    {"__weaklistoffset__", RETRACE_T_PYSSIZET, offsetof(ReplaySyncGatewayObject, weakreflist), RETRACE_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr},
};
#undef RSG_MEMBER

PyType_Slot ReplaySyncGateway_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(ReplaySyncGateway_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(ReplaySyncGateway_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(ReplaySyncGateway_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(ReplaySyncGateway_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(ReplayCallGateway_descr_get)},
    {Py_tp_members, ReplaySyncGateway_members},
    {Py_tp_getset, ReplaySyncGateway_getset},
    {Py_tp_doc, const_cast<char*>("ReplaySyncGateway(gate, target, take, thread_id, turn, tag, try_now, returns, "
                                  "slow, *, real=None): a replayed lock acquire in one native step "
                                  "(utils/README.md).")},
    {0, nullptr},
};

PyType_Spec ReplaySyncGateway_spec = {
    "retracesoftware.utils._utils.ReplaySyncGateway", sizeof(ReplaySyncGatewayObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    ReplaySyncGateway_slots,
};

}  // namespace

int init_replay_call(PyObject* module) {
    PyObject* turn = PyType_FromSpec(&TurnState_spec);
    if (!turn) return -1;
    TurnStateType = reinterpret_cast<PyTypeObject*>(turn);
    Py_INCREF(turn);  // kept for the life of the process
    if (PyModule_AddObject(module, "TurnState", turn) < 0) {
        Py_DECREF(turn);
        return -1;
    }
    PyObject* type = PyType_FromSpec(&ReplayCallGateway_spec);
    if (!type) return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(module, "ReplayCallGateway", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    str_next_kind = PyUnicode_InternFromString("next_kind");
    str_thread = PyUnicode_InternFromString("thread");
    str_id = PyUnicode_InternFromString("lock_id");
    tuple_false = PyTuple_Pack(1, Py_False);
    if (!tuple_false) return -1;
    str_async_next = PyUnicode_InternFromString("async_next");
    if (!str_async_next) return -1;
    str_release = PyUnicode_InternFromString("release");
    if (!str_next_kind || !str_thread || !str_id || !str_release) return -1;
    PyObject* accept = PyType_FromSpec(&SyncAccept_spec);
    if (!accept) return -1;
    SyncAcceptType = reinterpret_cast<PyTypeObject*>(accept);  // kept for the life of the process
    if (PyModule_AddFunctions(module, thread_id_methods) < 0) return -1;
    PyObject* sync = PyType_FromSpec(&ReplaySyncGateway_spec);
    if (!sync) return -1;
    Py_INCREF(sync);
    if (PyModule_AddObject(module, "ReplaySyncGateway", sync) < 0) {
        Py_DECREF(sync);
        return -1;
    }
    return 0;
}

}  // namespace retrace::utils
