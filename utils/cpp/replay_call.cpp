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

namespace retrace::utils {

namespace {

PyTypeObject* TurnStateType = nullptr;

struct TurnStateObject {
    PyObject_HEAD
    Py_ssize_t closed;
};

PyObject* TurnState_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "TurnState() takes no arguments");
        return nullptr;
    }
    auto* self = reinterpret_cast<TurnStateObject*>(type->tp_alloc(type, 0));
    if (self) self->closed = 0;
    return reinterpret_cast<PyObject*>(self);
}

void TurnState_dealloc(PyObject* op) {
    PyTypeObject* tp = Py_TYPE(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

PyMemberDef TurnState_members[] = {
    {"closed", RETRACE_T_PYSSIZET, offsetof(TurnStateObject, closed), 0,
     "non-zero: replayed calls take the slow path (a turn is held or reserved, or the replay failed)"},
    {nullptr, 0, 0, 0, nullptr},
};

PyType_Slot TurnState_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(TurnState_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(TurnState_dealloc)},
    {Py_tp_members, TurnState_members},
    {Py_tp_doc, const_cast<char*>("TurnState(): the replay sequencer's flag for ReplayCallGateway (closed).")},
    {0, nullptr},
};

PyType_Spec TurnState_spec = {
    "retracesoftware.utils._utils.TurnState", sizeof(TurnStateObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, TurnState_slots,
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
    PyObject* tid = PyObject_CallNoArgs(self->thread_id);
    if (!tid) {
        gate_set(gate, INTERNAL);
        Py_DECREF(fp);
        return nullptr;
    }
    PyObject* stack[6] = {tid, self->call_tag, self->name, fp, self->result_tag, self->error_tag};
    PyObject* got = PyObject_Vectorcall(self->take, stack, 6, nullptr);
    Py_DECREF(tid);
    Py_DECREF(fp);
    if (!got) {
        gate_set(gate, INTERNAL);
        return nullptr;
    }
    if (got == Py_None) {
        Py_DECREF(got);
        gate_set(gate, INTERNAL);
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    if (!PyTuple_CheckExact(got) || PyTuple_GET_SIZE(got) != 3) {
        Py_DECREF(got);
        gate_set(gate, INTERNAL);
        PyErr_SetString(PyExc_TypeError, "ReplayCallGateway: take() must return None or (ok, value, same_thread)");
        return nullptr;
    }
    if (PyTuple_GET_ITEM(got, 2) != Py_True) {
        PyObject* r = PyObject_CallNoArgs(self->handover);
        if (!r) {
            Py_DECREF(got);
            gate_set(gate, INTERNAL);
            return nullptr;
        }
        Py_DECREF(r);
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
        !PyCallable_Check(slow) || !PyCallable_Check(handover)) {
        PyErr_SetString(PyExc_TypeError, "target, take, thread_id, slow and handover must be callable");
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
    return 0;
}

}  // namespace retrace::utils
