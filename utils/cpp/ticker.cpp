// ScheduleTracer / Ticker: per-thread instruction counters for `--schedule`
// recordings (docs/THREADS.md "Recorded thread switches"; Python fallback
// and the contract: utils/_ticker.py).
//
// A C-level trace function (PyEval_SetTrace) is installed in every thread of
// the program; its `obj` is that thread's Ticker.  On a call event it turns
// opcode events on for frames of program code (phase INTERNAL when the frame
// starts, `want(code)` true: cached per code object); every opcode event of
// such a frame counts one instruction.
//
// Record: the thread that last ran counted code or wrote an event is `last`.
// When another thread counts an instruction or writes an event, the switch is
// written first, by the new thread, as `tag prev_tid prev_count` (in the
// same write as the event, so the pair is contiguous on the tape).  Check
// and write are made atomic by the tracer's `sched` lock: the C++ stream
// writer releases the GIL while it waits for its buffer lock.
//
// Replay: a thread may count an instruction only while `may_run` and its
// count is not its `stop`; otherwise `on_block(ticker, False)` (Python:
// hands the turn over, waits for its own) runs first.  A return event of a
// counted frame at `count == stop` calls `on_block(ticker, True)` (hand over
// only: a thread's last counted instruction may be its last return).
//
// GIL: everything here runs with the GIL held.
#include "utils.h"

#include <cstring>
#include <ctime>

namespace retrace::utils {

namespace {

PyTypeObject* TickerType = nullptr;
PyTypeObject* TracerType = nullptr;

struct TracerObject;

struct TickerObject {
    PyObject_HEAD
    TracerObject* tracer;   // strong
    PyObject* tid;          // strong
    long long count;
    long long stop;         // -1: none
    int may_run;
    int importing;          // depth of import-system frames (want() == 2): nothing counted inside
};

struct TracerObject {
    PyObject_HEAD
    int replay;
    int active;
    int enforce;
    PyObject* gate;         // a Gate
    PyObject* want;         // code -> bool
    PyObject* thread_id;    // () -> tid
    PyObject* write;        // record: the writer's write
    PyObject* bind;         // record: the writer's bind
    PyObject* tag;          // the PREEMPT tag
    PyObject* on_block;     // replay: (ticker) -> None
    PyObject* on_new;       // (ticker) -> None, or None
    PyObject* cache;        // dict code -> bool
    TickerObject* last;     // record: the thread that ran last (strong)
    long long chaos;        // record: mean instructions between forced switches (0: off)
    // Record: held across a switch check and its write, and across every
    // write (sched_enter). The writer may release the GIL inside a write (it
    // waits for its buffer lock without the GIL when the flusher thread holds
    // it: on a loaded machine the flusher is descheduled while holding it).
    // Then another thread could count instructions and write its PREEMPT while
    // this thread's switch or event was still unwritten: the tape said a
    // thread ran before the switch that gave it the turn, and the replay
    // ended in a deadlock report.
    PyThread_type_lock sched;
    unsigned long sched_owner;
    int sched_depth;
    int waiting;            // threads waiting for `sched` (read-only `waiting`: tests)
    long long countdown;
    uint64_t rng;
};

int trace(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg);

// Take `sched` (re-entrant for its holder); without the GIL while it waits.
void sched_enter(TracerObject* s) {
    unsigned long me = PyThread_get_thread_ident();
    if (s->sched_owner == me) {
        s->sched_depth++;
        return;
    }
    if (!PyThread_acquire_lock(s->sched, NOWAIT_LOCK)) {
        s->waiting++;
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(s->sched, WAIT_LOCK);
        Py_END_ALLOW_THREADS
        s->waiting--;
    }
    s->sched_owner = me;
    s->sched_depth = 1;
}

void sched_leave(TracerObject* s) {
    if (--s->sched_depth == 0) {
        s->sched_owner = 0;
        PyThread_release_lock(s->sched);
    }
}

// Record: the calling thread (ticker t) runs now; the switch from `last`
// goes on the tape first. extra/nextra: values written in the same write.
PyObject* record_switch(TracerObject* s, TickerObject* t, PyObject* const* extra, Py_ssize_t nextra, int* wrote) {
    *wrote = 0;
    if (s->last == t) Py_RETURN_NONE;
    TickerObject* prev = s->last;
    Py_INCREF(t);
    s->last = t;
    if (prev == nullptr) Py_RETURN_NONE;
    PyObject* count = PyLong_FromLongLong(prev->count);
    if (!count) {
        Py_DECREF(prev);
        return nullptr;
    }
    Py_ssize_t n = 3 + nextra;
    PyObject* small[16];
    PyObject** args = n <= 16 ? small : static_cast<PyObject**>(PyMem_Malloc(sizeof(PyObject*) * n));
    if (!args) {
        Py_DECREF(count);
        Py_DECREF(prev);
        return PyErr_NoMemory();
    }
    args[0] = s->tag;
    args[1] = prev->tid;
    args[2] = count;
    for (Py_ssize_t i = 0; i < nextra; ++i) args[3 + i] = extra[i];
    PyObject* r = PyObject_Vectorcall(s->write, args, n, nullptr);
    if (args != small) PyMem_Free(args);
    Py_DECREF(count);
    Py_DECREF(prev);
    *wrote = 1;
    return r;
}

int tick(TracerObject* s, TickerObject* t) {
    if (s->replay) {
        if (s->enforce && (!t->may_run || t->count == t->stop)) {
            PyObject* r = PyObject_CallFunctionObjArgs(s->on_block, reinterpret_cast<PyObject*>(t), Py_False, nullptr);
            if (!r) return -1;
            Py_DECREF(r);
        }
    } else {
        if (s->chaos > 0 && --s->countdown <= 0) {
            // --chaos: let another thread take the GIL here (before this
            // instruction runs: the replay stops at the same point).
            s->rng ^= s->rng << 13;
            s->rng ^= s->rng >> 7;
            s->rng ^= s->rng << 17;
            s->countdown = 1 + static_cast<long long>(s->rng % static_cast<uint64_t>(2 * s->chaos));
            Py_BEGIN_ALLOW_THREADS
            struct timespec pause = {0, 20000};
            nanosleep(&pause, nullptr);
            Py_END_ALLOW_THREADS
        }
        if (s->last != t) {
            int wrote;
            sched_enter(s);
            PyObject* r = record_switch(s, t, nullptr, 0, &wrote);
            sched_leave(s);
            if (!r) return -1;
            Py_DECREF(r);
        }
        // From the switch to the instruction nothing lets another thread
        // run counted code: the write ran under `sched` with `last == t`
        // (another thread's switch waits for `sched`), and what follows is C.
        // (The Python tracer must check again after its switch: its own
        // code may let another thread run, utils/_ticker.py _tick.)
    }
    t->count++;
    return 0;
}

int frame_counted(PyFrameObject* frame) {
    PyObject* v = PyObject_GetAttrString(reinterpret_cast<PyObject*>(frame), "f_trace_opcodes");
    if (!v) {
        PyErr_Clear();
        return 0;
    }
    int r = v == Py_True;
    Py_DECREF(v);
    return r;
}

// Turn opcode events on for `frame`.
// PYVERSIONS: 3.13 turns them on per code object, and only when
// f_trace_opcodes is set on a frame that has a trace function (f_trace);
// a C tracer leaves f_trace unset, so setting f_trace_opcodes alone gave the
// first frame of each code object no opcode events (the later ones had
// them). Which thread runs that first frame is a race, so the counts of a
// replay differed from the recording's (a thread ran on past its switch
// point, or finished without reaching it: deadlock reports). f_trace is set
// for the moment (any non-None object; our tracer), then unset again.
int count_opcodes(PyFrameObject* frame, PyObject* holder) {
    PyObject* f = reinterpret_cast<PyObject*>(frame);
#if PY_VERSION_HEX >= 0x030D0000
    if (PyObject_SetAttrString(f, "f_trace", holder) < 0) return -1;
    int rc = PyObject_SetAttrString(f, "f_trace_opcodes", Py_True);
    if (PyObject_SetAttrString(f, "f_trace", Py_None) < 0) return -1;
    return rc;
#else
    (void)holder;
    return PyObject_SetAttrString(f, "f_trace_opcodes", Py_True);
#endif
}

int trace(PyObject* obj, PyFrameObject* frame, int what, PyObject*) {
    TickerObject* t = reinterpret_cast<TickerObject*>(obj);
    TracerObject* s = t->tracer;
    if (!s->active) return 0;
    switch (what) {
        case PyTrace_OPCODE:
            return tick(s, t);
        case PyTrace_CALL: {
            PyObject* code = reinterpret_cast<PyObject*>(PyFrame_GetCode(frame));
            PyObject* v = PyDict_GetItemWithError(s->cache, code);  // borrowed
            if (!v) {
                if (PyErr_Occurred()) {
                    Py_DECREF(code);
                    return -1;
                }
                PyObject* r = PyObject_CallOneArg(s->want, code);
                if (!r) {
                    Py_DECREF(code);
                    return -1;
                }
                if (!PyLong_CheckExact(r)) {
                    Py_DECREF(r);
                    Py_DECREF(code);
                    PyErr_SetString(PyExc_TypeError, "ScheduleTracer: want() must return an int (0, 1, 2)");
                    return -1;
                }
                v = r;
                int failed = PyDict_SetItem(s->cache, code, v) < 0;
                Py_DECREF(r);  // the cache keeps it
                if (failed) {
                    Py_DECREF(code);
                    return -1;
                }
            }
            Py_DECREF(code);
            long kind = PyLong_AsLong(v);
            if (kind == 2) {
                // An import: what runs inside depends on what was imported
                // before (our runtime imports differ on record and replay).
                t->importing++;
                return 0;
            }
            if (kind == 1 && t->importing == 0 &&
                gate_get(reinterpret_cast<GateObject*>(s->gate)) == INTERNAL) {
                if (count_opcodes(frame, reinterpret_cast<PyObject*>(s)) < 0) return -1;
            }
            return 0;
        }
        case PyTrace_RETURN:
            if (t->importing > 0) {
                PyObject* code = reinterpret_cast<PyObject*>(PyFrame_GetCode(frame));
                PyObject* v = PyDict_GetItemWithError(s->cache, code);
                Py_DECREF(code);
                if (v && PyLong_AsLong(v) == 2) t->importing--;
                return 0;
            }
            if (s->replay && s->enforce && t->count == t->stop && frame_counted(frame)) {
                PyObject* r = PyObject_CallFunctionObjArgs(s->on_block, obj, Py_True, nullptr);
                if (!r) return -1;
                Py_DECREF(r);
            }
            return 0;
        default:
            return 0;
    }
}

// The calling thread's ticker: installs the tracer in this thread first.
TickerObject* current(TracerObject* s) {
    PyThreadState* ts = PyThreadState_Get();
    PyObject* obj = ts->c_traceobj;
    if (ts->c_tracefunc == trace && obj && Py_TYPE(obj) == TickerType &&
        reinterpret_cast<TickerObject*>(obj)->tracer == s)
        return reinterpret_cast<TickerObject*>(obj);
    // The thread's ticker outlives its trace function being replaced (by
    // threading's settrace hook, which installs it anew): kept in the
    // thread state's dict under the tracer.
    PyObject* tdict = PyThreadState_GetDict();
    if (!tdict) {
        PyErr_SetString(PyExc_RuntimeError, "ScheduleTracer: no thread state dict");
        return nullptr;
    }
    TickerObject* t = reinterpret_cast<TickerObject*>(PyDict_GetItemWithError(tdict, reinterpret_cast<PyObject*>(s)));
    if (t) {
        Py_INCREF(t);
    } else {
        if (PyErr_Occurred()) return nullptr;
        PyObject* tid = PyObject_CallNoArgs(s->thread_id);
        if (!tid) return nullptr;
        t = PyObject_New(TickerObject, TickerType);
        if (!t) {
            Py_DECREF(tid);
            return nullptr;
        }
        Py_INCREF(s);
        t->tracer = s;
        t->tid = tid;
        t->count = 0;
        t->stop = -1;
        t->may_run = 0;
        t->importing = 0;
        if (PyDict_SetItem(tdict, reinterpret_cast<PyObject*>(s), reinterpret_cast<PyObject*>(t)) < 0) {
            Py_DECREF(t);
            return nullptr;
        }
        if (s->on_new != Py_None) {
            PyObject* r = PyObject_CallOneArg(s->on_new, reinterpret_cast<PyObject*>(t));
            if (!r) {
                Py_DECREF(t);
                return nullptr;
            }
            Py_DECREF(r);
        }
    }
    // PYVERSIONS: 3.12+ turns opcode events on for a tracer only when some
    // frame asked for them before PyEval_SetTrace (interp->f_opcode_trace_set).
    PyFrameObject* here = PyEval_GetFrame();
    if (here) {
        PyObject* old = PyObject_GetAttrString(reinterpret_cast<PyObject*>(here), "f_trace_opcodes");
        if (!old) {
            Py_DECREF(t);
            return nullptr;
        }
        int ok = PyObject_SetAttrString(reinterpret_cast<PyObject*>(here), "f_trace_opcodes", Py_True) == 0 &&
                 PyObject_SetAttrString(reinterpret_cast<PyObject*>(here), "f_trace_opcodes", old) == 0;
        Py_DECREF(old);
        if (!ok) {
            Py_DECREF(t);
            return nullptr;
        }
    }
    PyEval_SetTrace(trace, reinterpret_cast<PyObject*>(t));  // keeps its own reference
    Py_DECREF(t);
    return reinterpret_cast<TickerObject*>(ts->c_traceobj);
}

// ---------------------------------------------------------------- Ticker
void Ticker_dealloc(PyObject* op) {
    TickerObject* t = reinterpret_cast<TickerObject*>(op);
    Py_XDECREF(t->tracer);
    Py_XDECREF(t->tid);
    PyObject_Free(op);
}

PyObject* Ticker_get_tid(PyObject* op, void*) { return Py_NewRef(reinterpret_cast<TickerObject*>(op)->tid); }
PyObject* Ticker_get_count(PyObject* op, void*) { return PyLong_FromLongLong(reinterpret_cast<TickerObject*>(op)->count); }
PyObject* Ticker_get_stop(PyObject* op, void*) { return PyLong_FromLongLong(reinterpret_cast<TickerObject*>(op)->stop); }
int Ticker_set_stop(PyObject* op, PyObject* v, void*) {
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete stop");
        return -1;
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    reinterpret_cast<TickerObject*>(op)->stop = x;
    return 0;
}
PyObject* Ticker_get_may_run(PyObject* op, void*) { return PyBool_FromLong(reinterpret_cast<TickerObject*>(op)->may_run); }
int Ticker_set_may_run(PyObject* op, PyObject* v, void*) {
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete may_run");
        return -1;
    }
    int x = PyObject_IsTrue(v);
    if (x < 0) return -1;
    reinterpret_cast<TickerObject*>(op)->may_run = x;
    return 0;
}

PyGetSetDef Ticker_getset[] = {
    {"tid", Ticker_get_tid, nullptr, "logical thread id", nullptr},
    {"count", Ticker_get_count, nullptr, "instructions of program code counted in this thread", nullptr},
    {"stop", Ticker_get_stop, Ticker_set_stop, "replay: hand the turn over at this count (-1: none)", nullptr},
    {"may_run", Ticker_get_may_run, Ticker_set_may_run, "replay: this thread holds the turn", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot Ticker_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(Ticker_dealloc)},
    {Py_tp_getset, Ticker_getset},
    {Py_tp_doc, const_cast<char*>("One thread's instruction counter (see ScheduleTracer).")},
    {0, nullptr},
};

PyType_Spec Ticker_spec = {
    "retracesoftware.utils._utils.Ticker", sizeof(TickerObject), 0, Py_TPFLAGS_DEFAULT, Ticker_slots,
};

// ---------------------------------------------------------------- ScheduleTracer
PyObject* Tracer_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
    static const char* kwlist[] = {"mode", "gate", "want", "thread_id", "tag", "write", "bind", "on_block",
                                   "on_new", nullptr};
    const char* mode;
    PyObject *gate, *want, *thread_id, *tag, *write = Py_None, *bind = Py_None, *on_block = Py_None,
             *on_new = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sOOOO|OOOO", const_cast<char**>(kwlist), &mode, &gate, &want,
                                     &thread_id, &tag, &write, &bind, &on_block, &on_new))
        return nullptr;
    int replay;
    if (strcmp(mode, "record") == 0) replay = 0;
    else if (strcmp(mode, "replay") == 0) replay = 1;
    else {
        PyErr_Format(PyExc_ValueError, "mode must be 'record' or 'replay', got %R", PyTuple_GET_ITEM(args, 0));
        return nullptr;
    }
    if (!PyObject_TypeCheck(gate, GateType)) {
        PyErr_Format(PyExc_TypeError, "gate must be a Gate, got %s", Py_TYPE(gate)->tp_name);
        return nullptr;
    }
    if (!replay && (!PyCallable_Check(write) || !PyCallable_Check(bind))) {
        PyErr_SetString(PyExc_TypeError, "a recording ScheduleTracer needs write= and bind= callables");
        return nullptr;
    }
    if (replay && !PyCallable_Check(on_block)) {
        PyErr_SetString(PyExc_TypeError, "a replaying ScheduleTracer needs an on_block= callable");
        return nullptr;
    }
    TracerObject* s = reinterpret_cast<TracerObject*>(type->tp_alloc(type, 0));
    if (!s) return nullptr;
    s->replay = replay;
    s->active = 1;
    s->enforce = 1;
    s->gate = Py_NewRef(gate);
    s->want = Py_NewRef(want);
    s->thread_id = Py_NewRef(thread_id);
    s->tag = Py_NewRef(tag);
    s->write = Py_NewRef(write);
    s->bind = Py_NewRef(bind);
    s->on_block = Py_NewRef(on_block);
    s->on_new = Py_NewRef(on_new);
    s->last = nullptr;
    s->chaos = 0;
    s->countdown = 0;
    s->rng = ((static_cast<uint64_t>(time(nullptr)) * 0x9E3779B97F4A7C15ull) ^ reinterpret_cast<uintptr_t>(s)) | 1;
    s->sched_owner = 0;
    s->sched_depth = 0;
    s->waiting = 0;
    s->sched = PyThread_allocate_lock();
    if (!s->sched) {
        Py_DECREF(s);
        return PyErr_NoMemory();
    }
    s->cache = PyDict_New();
    if (!s->cache) {
        Py_DECREF(s);
        return nullptr;
    }
    return reinterpret_cast<PyObject*>(s);
}

int Tracer_traverse(PyObject* op, visitproc visit, void* arg) {
    TracerObject* s = reinterpret_cast<TracerObject*>(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(s->want);
    Py_VISIT(s->write);
    Py_VISIT(s->bind);
    Py_VISIT(s->on_block);
    Py_VISIT(s->on_new);
    Py_VISIT(s->cache);
    return 0;
}

int Tracer_clear(PyObject* op) {
    TracerObject* s = reinterpret_cast<TracerObject*>(op);
    Py_CLEAR(s->gate);
    Py_CLEAR(s->want);
    Py_CLEAR(s->thread_id);
    Py_CLEAR(s->tag);
    Py_CLEAR(s->write);
    Py_CLEAR(s->bind);
    Py_CLEAR(s->on_block);
    Py_CLEAR(s->on_new);
    Py_CLEAR(s->cache);
    Py_CLEAR(s->last);
    return 0;
}

void Tracer_dealloc(PyObject* op) {
    PyObject_GC_UnTrack(op);
    Tracer_clear(op);
    TracerObject* s = reinterpret_cast<TracerObject*>(op);
    if (s->sched) {
        PyThread_free_lock(s->sched);
        s->sched = nullptr;
    }
    PyTypeObject* tp = Py_TYPE(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

PyObject* Tracer_current(PyObject* op, PyObject*) {
    TickerObject* t = current(reinterpret_cast<TracerObject*>(op));
    return t ? Py_NewRef(reinterpret_cast<PyObject*>(t)) : nullptr;
}

PyObject* Tracer_uninstall(PyObject* op, PyObject*) {
    PyThreadState* ts = PyThreadState_Get();
    PyObject* obj = ts->c_traceobj;
    if (ts->c_tracefunc == trace && obj && Py_TYPE(obj) == TickerType &&
        reinterpret_cast<TickerObject*>(obj)->tracer == reinterpret_cast<TracerObject*>(op))
        PyEval_SetTrace(nullptr, nullptr);
    Py_RETURN_NONE;
}

// A sys.settrace-style function for threading.settrace: installs the
// tracer in the new thread, then traces nothing itself.
PyObject* Tracer_call(PyObject* op, PyObject*, PyObject*) {
    if (!current(reinterpret_cast<TracerObject*>(op))) return nullptr;
    Py_RETURN_NONE;
}

PyObject* Tracer_write(PyObject* op, PyObject* const* args, Py_ssize_t nargs) {
    TracerObject* s = reinterpret_cast<TracerObject*>(op);
    if (s->active && !s->replay) {
        TickerObject* t = current(s);
        if (!t) return nullptr;
        int wrote;
        sched_enter(s);
        PyObject* r = record_switch(s, t, args, nargs, &wrote);
        if (r && !wrote) {
            Py_DECREF(r);
            r = PyObject_Vectorcall(s->write, args, nargs, nullptr);
        }
        sched_leave(s);
        return r;
    }
    return PyObject_Vectorcall(s->write, args, nargs, nullptr);
}

PyObject* Tracer_bind(PyObject* op, PyObject* obj) {
    TracerObject* s = reinterpret_cast<TracerObject*>(op);
    if (s->active && !s->replay) {
        TickerObject* t = current(s);
        if (!t) return nullptr;
        int wrote;
        sched_enter(s);
        PyObject* r = record_switch(s, t, nullptr, 0, &wrote);
        if (r) {
            Py_DECREF(r);
            r = PyObject_CallOneArg(s->bind, obj);
        }
        sched_leave(s);
        return r;
    }
    return PyObject_CallOneArg(s->bind, obj);
}

// In a forked child only the forking thread survives: a `sched` another
// thread held at the fork would never be released (the old lock is left
// allocated: it may still look held).
PyObject* Tracer_after_fork(PyObject* op, PyObject*) {
    TracerObject* s = reinterpret_cast<TracerObject*>(op);
    PyThread_type_lock fresh = PyThread_allocate_lock();
    if (!fresh) return PyErr_NoMemory();
    s->sched = fresh;
    s->sched_owner = 0;
    s->sched_depth = 0;
    s->waiting = 0;
    Py_RETURN_NONE;
}

PyMethodDef Tracer_methods[] = {
    {"after_fork", Tracer_after_fork, METH_NOARGS, "in a forked child: a fresh record lock"},
    {"current", Tracer_current, METH_NOARGS, "the calling thread's Ticker (installs the tracer there)"},
    {"uninstall", Tracer_uninstall, METH_NOARGS, "remove the tracer from the calling thread"},
    {"write", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Tracer_write)), METH_FASTCALL,
     "record: write(*values) preceded by the switch to this thread, if any"},
    {"bind", Tracer_bind, METH_O, "record: bind(obj) preceded by the switch to this thread, if any"},
    {nullptr, nullptr, 0, nullptr},
};

PyObject* Tracer_get_flag(PyObject* op, void* which) {
    TracerObject* s = reinterpret_cast<TracerObject*>(op);
    return PyBool_FromLong(which ? s->enforce : s->active);
}
int Tracer_set_flag(PyObject* op, PyObject* v, void* which) {
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete");
        return -1;
    }
    int x = PyObject_IsTrue(v);
    if (x < 0) return -1;
    TracerObject* s = reinterpret_cast<TracerObject*>(op);
    (which ? s->enforce : s->active) = x;
    return 0;
}

PyObject* Tracer_get_chaos(PyObject* op, void*) { return PyLong_FromLongLong(reinterpret_cast<TracerObject*>(op)->chaos); }
PyObject* Tracer_get_waiting(PyObject* op, void*) { return PyLong_FromLong(reinterpret_cast<TracerObject*>(op)->waiting); }
int Tracer_set_chaos(PyObject* op, PyObject* v, void*) {
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete chaos");
        return -1;
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    TracerObject* s = reinterpret_cast<TracerObject*>(op);
    s->chaos = x < 0 ? 0 : x;
    s->countdown = s->chaos;
    return 0;
}

PyGetSetDef Tracer_getset[] = {
    {"chaos", Tracer_get_chaos, Tracer_set_chaos, "record: mean instructions between forced switches (0: off)", nullptr},
    {"waiting", Tracer_get_waiting, nullptr, "record: threads waiting for the record lock (tests)", nullptr},
    {"active", Tracer_get_flag, Tracer_set_flag, "counting and switch checks on", nullptr},
    {"enforce", Tracer_get_flag, Tracer_set_flag, "replay: threads wait for their turn", reinterpret_cast<void*>(1)},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot Tracer_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(Tracer_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(Tracer_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(Tracer_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(Tracer_clear)},
    {Py_tp_call, reinterpret_cast<void*>(Tracer_call)},
    {Py_tp_methods, Tracer_methods},
    {Py_tp_getset, Tracer_getset},
    {Py_tp_doc, const_cast<char*>("Per-thread instruction counters for --schedule (utils/_ticker.py).")},
    {0, nullptr},
};

PyType_Spec Tracer_spec = {
    "retracesoftware.utils._utils.ScheduleTracer", sizeof(TracerObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, Tracer_slots,
};

}  // namespace

int init_ticker(PyObject* module) {
    PyObject* t = PyType_FromSpec(&Ticker_spec);
    if (!t) return -1;
    TickerType = reinterpret_cast<PyTypeObject*>(t);
    Py_INCREF(t);
    if (PyModule_AddObject(module, "Ticker", t) < 0) {
        Py_DECREF(t);
        return -1;
    }
    PyObject* s = PyType_FromSpec(&Tracer_spec);
    if (!s) return -1;
    TracerType = reinterpret_cast<PyTypeObject*>(s);
    Py_INCREF(s);
    if (PyModule_AddObject(module, "ScheduleTracer", s) < 0) {
        Py_DECREF(s);
        return -1;
    }
    return 0;
}

}  // namespace retrace::utils
