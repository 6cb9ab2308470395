// RecordCallGateway: the whole recorded call in one native step, with the
// CALL event written together with its outcome.  Its contract (arguments,
// what is written when, the phases, flush_pending_calls) is the
// RecordCallGateway row of utils/README.md: that table is the one
// specification, this file only says how it is done.
//
// The CALL is written when the call ends ("deferred"), so a recorded call is
// one writer call in the common case.  Anything that must come *between* the
// CALL and its outcome on the tape -- a callback into the program made by
// the external code -- first calls flush_pending_calls(), which writes the
// CALL of every call in progress on this thread that has not been written
// yet (oldest first); those calls then write only their outcome.  Pending
// calls are a per-thread intrusive stack of frames living on the C stack
// (trivially initialised thread_local pointer: no TLS guard on the hot path).
//
// GIL: held throughout; the thread_local stack is per OS thread.
#include "utils.h"

namespace retrace::utils {

namespace {

struct PendingCall {
    PendingCall* prev;
    PyObject* write;     // borrowed from the gateway (alive for the call)
    PyObject* call_tag;  // borrowed
    PyObject* name;      // borrowed
    PyObject* fp;        // owned by the caller's frame
    bool written;
};

thread_local PendingCall* tl_top RETRACE_TLS_IE = nullptr;

PyTypeObject* RecordCallGatewayType = nullptr;

struct RecordCallGatewayObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    GateObject* gate;
    PyObject* target;
    PyObject* write;
    PyObject* call_tag;
    PyObject* name;
    PyObject* result_tag;
    PyObject* error_tag;
    PyObject* slow;      // Py_None: write(result_tag, r)
    PyObject* fp_noargs; // fingerprint() precomputed
    PyObject* weakreflist;
    // write is a builtin METH_FASTCALL method (StreamWriter.write): called
    // through its C function, skipping the vectorcall dispatch (borrowed
    // from `write`, which holds both).
    _PyCFunctionFast write_fn;
    PyObject* write_self;
};

inline PyObject* call_write(RecordCallGatewayObject* self, PyObject* const* stack, Py_ssize_t n) {
    if (self->write_fn) return self->write_fn(self->write_self, stack, n);
    return PyObject_Vectorcall(self->write, stack, n, nullptr);
}

inline bool plain_type(PyObject* r) {
    PyTypeObject* t = Py_TYPE(r);
    return r == Py_None || t == &PyFloat_Type || t == &PyLong_Type || t == &PyUnicode_Type || t == &PyBool_Type ||
           t == &PyBytes_Type;
}

// Writes `call_tag name fp` unless already written. 0 / -1.
int write_call(PendingCall& f) {
    if (f.written) return 0;
    PyObject* stack[3] = {f.call_tag, f.name, f.fp};
    PyObject* r = PyObject_Vectorcall(f.write, stack, 3, nullptr);
    if (!r) return -1;
    Py_DECREF(r);
    f.written = true;
    return 0;
}

PyObject* RecordCallGateway_vectorcall(PyObject* op, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* self = reinterpret_cast<RecordCallGatewayObject*>(op);
    GateObject* gate = self->gate;
    if (gate_get(gate) != INTERNAL) return PyObject_Vectorcall(self->target, args, nargsf, kwnames);

    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject* fp;
    if (nargs == 0 && !kwnames) {
        fp = Py_NewRef(self->fp_noargs);
    } else {
        fp = fingerprint_vector(args, nargs, kwnames);
        if (!fp) return nullptr;
    }
    PendingCall frame{tl_top, self->write, self->call_tag, self->name, fp, false};
    tl_top = &frame;
    gate_set(gate, EXTERNAL);
    PyObject* result = PyObject_Vectorcall(self->target, args, nargsf, kwnames);
    gate_set(gate, INTERNAL);
    tl_top = frame.prev;

    if (!result) [[unlikely]] {
        PyObject* exc = fetch_exception();
        PyObject* r;
        if (frame.written) {
            PyObject* stack[2] = {self->error_tag, exc};
            r = call_write(self, stack, 2);
        } else {
            PyObject* stack[5] = {self->call_tag, self->name, fp, self->error_tag, exc};
            r = call_write(self, stack, 5);
        }
        Py_DECREF(fp);
        restore_exception_after(r, exc);   // a failed write's exception wins, chained to the call's
        return nullptr;
    }
    if (plain_type(result)) [[likely]] {
        PyObject* r;
        if (frame.written) {
            PyObject* stack[2] = {self->result_tag, result};
            r = call_write(self, stack, 2);
        } else {
            PyObject* stack[5] = {self->call_tag, self->name, fp, self->result_tag, result};
            r = call_write(self, stack, 5);
        }
        Py_DECREF(fp);
        if (!r) {
            Py_DECREF(result);
            return nullptr;
        }
        Py_DECREF(r);
        return result;
    }
    int rc = write_call(frame);
    Py_DECREF(fp);
    if (rc < 0) {
        Py_DECREF(result);
        return nullptr;
    }
    PyObject* out;
    if (self->slow != Py_None) {
        out = PyObject_CallOneArg(self->slow, result);
    } else {
        PyObject* stack[2] = {self->result_tag, result};
        PyObject* r = call_write(self, stack, 2);
        out = r ? Py_NewRef(result) : nullptr;
        Py_XDECREF(r);
    }
    Py_DECREF(result);
    return out;
}

PyObject* RecordCallGateway_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"gate",       "target",    "write", "call_tag", "name",
                                   "result_tag", "error_tag", "slow",  nullptr};
    PyObject *gate, *target, *write, *call_tag, *name, *result_tag, *error_tag, *slow = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOO|O:RecordCallGateway", const_cast<char**>(kwlist), &gate,
                                     &target, &write, &call_tag, &name, &result_tag, &error_tag, &slow))
        return nullptr;
    if (!PyObject_TypeCheck(gate, GateType)) {
        PyErr_Format(PyExc_TypeError, "gate must be a Gate, got %.200s", Py_TYPE(gate)->tp_name);
        return nullptr;
    }
    if (!PyCallable_Check(target) || !PyCallable_Check(write) || (slow != Py_None && !PyCallable_Check(slow))) {
        PyErr_SetString(PyExc_TypeError, "target and write must be callable, slow callable or None");
        return nullptr;
    }
    PyObject* fp = fingerprint_vector(nullptr, 0, nullptr);
    if (!fp) return nullptr;
    auto* self = reinterpret_cast<RecordCallGatewayObject*>(type->tp_alloc(type, 0));
    if (!self) {
        Py_DECREF(fp);
        return nullptr;
    }
    self->vectorcall = RecordCallGateway_vectorcall;
    self->gate = reinterpret_cast<GateObject*>(Py_NewRef(gate));
    self->target = Py_NewRef(target);
    self->write = Py_NewRef(write);
    self->call_tag = Py_NewRef(call_tag);
    self->name = Py_NewRef(name);
    self->result_tag = Py_NewRef(result_tag);
    self->error_tag = Py_NewRef(error_tag);
    self->slow = Py_NewRef(slow);
    self->fp_noargs = fp;
    self->weakreflist = nullptr;
    self->write_fn = nullptr;
    self->write_self = nullptr;
    if (PyCFunction_Check(write)) {
        int flags = PyCFunction_GET_FLAGS(write);
        PyObject* bound = PyCFunction_GET_SELF(write);
        if ((flags & (METH_VARARGS | METH_FASTCALL | METH_NOARGS | METH_O | METH_KEYWORDS | METH_METHOD)) ==
                METH_FASTCALL && bound && !PyModule_Check(bound)) {
            self->write_fn = reinterpret_cast<_PyCFunctionFast>(reinterpret_cast<void (*)(void)>(
                PyCFunction_GET_FUNCTION(write)));
            self->write_self = bound;
        }
    }
    return reinterpret_cast<PyObject*>(self);
}

int RecordCallGateway_traverse(PyObject* op, visitproc visit, void* arg) {
    auto* self = reinterpret_cast<RecordCallGatewayObject*>(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(reinterpret_cast<PyObject*>(self->gate));
    Py_VISIT(self->target);
    Py_VISIT(self->write);
    Py_VISIT(self->call_tag);
    Py_VISIT(self->name);
    Py_VISIT(self->result_tag);
    Py_VISIT(self->error_tag);
    Py_VISIT(self->slow);
    return 0;
}

int RecordCallGateway_clear(PyObject* op) {
    auto* self = reinterpret_cast<RecordCallGatewayObject*>(op);
    // Stay callable (fields are read unchecked): the callables become None,
    // so a call raises TypeError instead of crashing.
    Py_SETREF(self->target, Py_NewRef(Py_None));
    Py_SETREF(self->write, Py_NewRef(Py_None));
    Py_SETREF(self->slow, Py_NewRef(Py_None));
    return 0;
}

void RecordCallGateway_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<RecordCallGatewayObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->target);
    Py_CLEAR(self->write);
    Py_CLEAR(self->call_tag);
    Py_CLEAR(self->name);
    Py_CLEAR(self->result_tag);
    Py_CLEAR(self->error_tag);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->fp_noargs);
    tp->tp_free(op);
    Py_DECREF(tp);
}

PyObject* RecordCallGateway_descr_get(PyObject* self, PyObject* obj, PyObject*) {
    if (obj == nullptr) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

PyObject* RecordCallGateway_get_name(PyObject* op, void*) {
    PyObject* name = PyObject_GetAttrString(reinterpret_cast<RecordCallGatewayObject*>(op)->target, "__name__");
    if (!name) {
        PyErr_Clear();
        return PyUnicode_FromString("RecordCallGateway");
    }
    return name;
}
PyObject* RecordCallGateway_get_wrapped(PyObject* op, void*) {
    return Py_NewRef(reinterpret_cast<RecordCallGatewayObject*>(op)->target);
}
PyObject* RecordCallGateway_repr(PyObject* op) {
    return PyUnicode_FromFormat("<RecordCallGateway %R for %R>", reinterpret_cast<RecordCallGatewayObject*>(op)->name,
                                reinterpret_cast<RecordCallGatewayObject*>(op)->target);
}

PyGetSetDef RecordCallGateway_getset[] = {
    {"__wrapped__", RecordCallGateway_get_wrapped, nullptr, "the target", nullptr},
    {"__name__", RecordCallGateway_get_name, nullptr, "the target's __name__", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMemberDef RecordCallGateway_members[] = {
    {"gate", RETRACE_T_OBJECT_EX, offsetof(RecordCallGatewayObject, gate), RETRACE_READONLY, nullptr},
    {"target", RETRACE_T_OBJECT_EX, offsetof(RecordCallGatewayObject, target), RETRACE_READONLY, nullptr},
    {"write", RETRACE_T_OBJECT_EX, offsetof(RecordCallGatewayObject, write), RETRACE_READONLY, nullptr},
    {"call_tag", RETRACE_T_OBJECT_EX, offsetof(RecordCallGatewayObject, call_tag), RETRACE_READONLY, nullptr},
    {"name", RETRACE_T_OBJECT_EX, offsetof(RecordCallGatewayObject, name), RETRACE_READONLY, nullptr},
    {"result_tag", RETRACE_T_OBJECT_EX, offsetof(RecordCallGatewayObject, result_tag), RETRACE_READONLY, nullptr},
    {"error_tag", RETRACE_T_OBJECT_EX, offsetof(RecordCallGatewayObject, error_tag), RETRACE_READONLY, nullptr},
    {"slow", RETRACE_T_OBJECT_EX, offsetof(RecordCallGatewayObject, slow), RETRACE_READONLY, nullptr},
    {"__vectorcalloffset__", RETRACE_T_PYSSIZET, offsetof(RecordCallGatewayObject, vectorcall), RETRACE_READONLY,
     nullptr},
    {"__weaklistoffset__", RETRACE_T_PYSSIZET, offsetof(RecordCallGatewayObject, weakreflist), RETRACE_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

PyType_Slot RecordCallGateway_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(RecordCallGateway_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(RecordCallGateway_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(RecordCallGateway_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(RecordCallGateway_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(RecordCallGateway_descr_get)},
    {Py_tp_members, RecordCallGateway_members},
    {Py_tp_getset, RecordCallGateway_getset},
    {Py_tp_repr, reinterpret_cast<void*>(RecordCallGateway_repr)},
    {Py_tp_doc, const_cast<char*>("RecordCallGateway(gate, target, write, call_tag, name, result_tag, error_tag, "
                                  "slow=None): a recorded call, CALL written with its outcome (utils/README.md).")},
    {0, nullptr},
};

PyType_Spec RecordCallGateway_spec = {
    "retracesoftware.utils._utils.RecordCallGateway", sizeof(RecordCallGatewayObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    RecordCallGateway_slots,
};

// Writes the unwritten frames from `f` down, oldest first; -1 on error.
Py_ssize_t flush_from(PendingCall* f) {
    if (!f || f->written) return 0;  // below a written frame all are written
    Py_ssize_t below = flush_from(f->prev);
    if (below < 0 || write_call(*f) < 0) return -1;
    return below + 1;
}

PyObject* flush_pending_calls(PyObject*, PyObject*) {
    Py_ssize_t n = flush_from(tl_top);
    if (n < 0) return nullptr;
    return PyLong_FromSsize_t(n);
}

PyMethodDef flush_def = {"flush_pending_calls", flush_pending_calls, METH_NOARGS,
                         "flush_pending_calls() -> int: write the CALL of every recorded call in progress on this "
                         "thread not written yet (oldest first); returns how many were written"};

}  // namespace

int init_record_call(PyObject* module) {
    PyObject* type = PyType_FromSpec(&RecordCallGateway_spec);
    if (!type) return -1;
    RecordCallGatewayType = reinterpret_cast<PyTypeObject*>(type);
    Py_INCREF(type);  // kept for the life of the process
    if (PyModule_AddObject(module, "RecordCallGateway", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    PyObject* fn = PyCFunction_NewEx(&flush_def, nullptr, nullptr);
    if (!fn) return -1;
    if (PyModule_AddObject(module, "flush_pending_calls", fn) < 0) {
        Py_DECREF(fn);
        return -1;
    }
    return 0;
}

}  // namespace retrace::utils
