// RecordGateway and ReplayGateway: the recorded call's two plain gateways
// (their contract: the table in utils/README.md). A gateway sits where the
// patched function was; while its Gate's phase is INTERNAL it runs the
// record side (before/target/after/error, the target in phase EXTERNAL) or
// the replay side, otherwise the target straight through.  Vectorcall with
// METHOD_DESCRIPTOR (see GATEWAY_FLAGS), so a gateway in a type's dict binds
// like a function.
//
// GIL: everything here runs with the GIL held.
#include "utils.h"

namespace retrace::utils {

static PyTypeObject* RecordGatewayType = nullptr;
static PyTypeObject* ReplayGatewayType = nullptr;

struct RecordGatewayObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    GateObject* gate;
    PyObject* target;
    PyObject* before;  // Py_None: skipped
    PyObject* after;   // Py_None: identity
    PyObject* error;   // Py_None: skipped
    PyObject* weakreflist;
};

struct ReplayGatewayObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    GateObject* gate;
    PyObject* target;
    PyObject* replay;
    PyObject* weakreflist;
};

static PyObject* RecordGateway_vectorcall(PyObject* op, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* self = reinterpret_cast<RecordGatewayObject*>(op);
    GateObject* gate = self->gate;
    if (gate_get(gate) != INTERNAL) return PyObject_Vectorcall(self->target, args, nargsf, kwnames);

    if (self->before != Py_None) {
        PyObject* r = PyObject_Vectorcall(self->before, args, nargsf, kwnames);
        if (!r) return nullptr;
        Py_DECREF(r);
    }
    gate_set(gate, EXTERNAL);
    PyObject* result = PyObject_Vectorcall(self->target, args, nargsf, kwnames);
    gate_set(gate, INTERNAL);
    if (!result) [[unlikely]] {
        if (self->error != Py_None) {
            PyObject* exc = fetch_exception();
            // error() raised: its exception wins, chained to the original.
            restore_exception_after(PyObject_CallOneArg(self->error, exc), exc);
        }
        return nullptr;
    }
    if (self->after == Py_None) return result;
    PyObject* out = PyObject_CallOneArg(self->after, result);
    Py_DECREF(result);
    return out;
}

static PyObject* ReplayGateway_vectorcall(PyObject* op, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* self = reinterpret_cast<ReplayGatewayObject*>(op);
    if (gate_get(self->gate) != INTERNAL) return PyObject_Vectorcall(self->target, args, nargsf, kwnames);
    return PyObject_Vectorcall(self->replay, args, nargsf, kwnames);
}

static bool check_callable(const char* name, PyObject* value, bool optional) {
    if (optional && value == Py_None) return true;
    if (!PyCallable_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable%s, got %.200s", name, optional ? " or None" : "",
                     Py_TYPE(value)->tp_name);
        return false;
    }
    return true;
}

static bool check_gate(PyObject* gate) {
    if (!PyObject_TypeCheck(gate, GateType)) {
        PyErr_Format(PyExc_TypeError, "gate must be a Gate, got %.200s", Py_TYPE(gate)->tp_name);
        return false;
    }
    return true;
}

static PyObject* RecordGateway_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"gate", "target", "before", "after", "error", nullptr};
    PyObject *gate, *target, *before = Py_None, *after = Py_None, *error = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OOO:RecordGateway", const_cast<char**>(kwlist), &gate,
                                     &target, &before, &after, &error))
        return nullptr;
    if (!check_gate(gate) || !check_callable("target", target, false) || !check_callable("before", before, true) ||
        !check_callable("after", after, true) || !check_callable("error", error, true))
        return nullptr;
    auto* self = reinterpret_cast<RecordGatewayObject*>(type->tp_alloc(type, 0));
    if (!self) return nullptr;
    self->vectorcall = RecordGateway_vectorcall;
    self->gate = reinterpret_cast<GateObject*>(Py_NewRef(gate));
    self->target = Py_NewRef(target);
    self->before = Py_NewRef(before);
    self->after = Py_NewRef(after);
    self->error = Py_NewRef(error);
    self->weakreflist = nullptr;
    return reinterpret_cast<PyObject*>(self);
}

static PyObject* ReplayGateway_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"gate", "target", "replay", nullptr};
    PyObject *gate, *target, *replay;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:ReplayGateway", const_cast<char**>(kwlist), &gate, &target,
                                     &replay))
        return nullptr;
    if (!check_gate(gate) || !check_callable("target", target, false) || !check_callable("replay", replay, false))
        return nullptr;
    auto* self = reinterpret_cast<ReplayGatewayObject*>(type->tp_alloc(type, 0));
    if (!self) return nullptr;
    self->vectorcall = ReplayGateway_vectorcall;
    self->gate = reinterpret_cast<GateObject*>(Py_NewRef(gate));
    self->target = Py_NewRef(target);
    self->replay = Py_NewRef(replay);
    self->weakreflist = nullptr;
    return reinterpret_cast<PyObject*>(self);
}

static int RecordGateway_traverse(PyObject* op, visitproc visit, void* arg) {
    auto* self = reinterpret_cast<RecordGatewayObject*>(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(reinterpret_cast<PyObject*>(self->gate));
    Py_VISIT(self->target);
    Py_VISIT(self->before);
    Py_VISIT(self->after);
    Py_VISIT(self->error);
    return 0;
}

static int RecordGateway_clear(PyObject* op) {
    auto* self = reinterpret_cast<RecordGatewayObject*>(op);
    // Keep the object callable after a GC clear: swap fields to None (the
    // vectorcall reads them without NULL checks).  gate stays (it holds no
    // references, so it cannot be part of a cycle).
    Py_SETREF(self->target, Py_NewRef(Py_None));
    Py_SETREF(self->before, Py_NewRef(Py_None));
    Py_SETREF(self->after, Py_NewRef(Py_None));
    Py_SETREF(self->error, Py_NewRef(Py_None));
    return 0;
}

static void RecordGateway_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<RecordGatewayObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->target);
    Py_CLEAR(self->before);
    Py_CLEAR(self->after);
    Py_CLEAR(self->error);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int ReplayGateway_traverse(PyObject* op, visitproc visit, void* arg) {
    auto* self = reinterpret_cast<ReplayGatewayObject*>(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(reinterpret_cast<PyObject*>(self->gate));
    Py_VISIT(self->target);
    Py_VISIT(self->replay);
    return 0;
}

static int ReplayGateway_clear(PyObject* op) {
    auto* self = reinterpret_cast<ReplayGatewayObject*>(op);
    Py_SETREF(self->target, Py_NewRef(Py_None));
    Py_SETREF(self->replay, Py_NewRef(Py_None));
    return 0;
}

static void ReplayGateway_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<ReplayGatewayObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->target);
    Py_CLEAR(self->replay);
    tp->tp_free(op);
    Py_DECREF(tp);
}

// Function-like binding: through an instance -> bound method.
static PyObject* Gateway_descr_get(PyObject* self, PyObject* obj, PyObject*) {
    if (obj == nullptr) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

template <typename T>
static PyObject* Gateway_get_wrapped(PyObject* self, void*) {
    return Py_NewRef(reinterpret_cast<T*>(self)->target);
}

template <typename T>
static PyObject* Gateway_get_name(PyObject* self, void*) {
    PyObject* name = PyObject_GetAttrString(reinterpret_cast<T*>(self)->target, "__name__");
    if (!name) {
        PyErr_Clear();
        return PyUnicode_FromString(Py_TYPE(self)->tp_name);
    }
    return name;
}

static PyObject* RecordGateway_repr(PyObject* self) {
    return PyUnicode_FromFormat("<RecordGateway for %R>", reinterpret_cast<RecordGatewayObject*>(self)->target);
}
static PyObject* ReplayGateway_repr(PyObject* self) {
    return PyUnicode_FromFormat("<ReplayGateway for %R>", reinterpret_cast<ReplayGatewayObject*>(self)->target);
}

static PyGetSetDef RecordGateway_getset[] = {
    {"__wrapped__", Gateway_get_wrapped<RecordGatewayObject>, nullptr, "the target", nullptr},
    {"__name__", Gateway_get_name<RecordGatewayObject>, nullptr, "the target's __name__", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};
static PyGetSetDef ReplayGateway_getset[] = {
    {"__wrapped__", Gateway_get_wrapped<ReplayGatewayObject>, nullptr, "the target", nullptr},
    {"__name__", Gateway_get_name<ReplayGatewayObject>, nullptr, "the target's __name__", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

static PyMemberDef RecordGateway_members[] = {
    {"gate", RETRACE_T_OBJECT_EX, offsetof(RecordGatewayObject, gate), RETRACE_READONLY, nullptr},
    {"target", RETRACE_T_OBJECT_EX, offsetof(RecordGatewayObject, target), RETRACE_READONLY, nullptr},
    {"before", RETRACE_T_OBJECT_EX, offsetof(RecordGatewayObject, before), RETRACE_READONLY, nullptr},
    {"after", RETRACE_T_OBJECT_EX, offsetof(RecordGatewayObject, after), RETRACE_READONLY, nullptr},
    {"error", RETRACE_T_OBJECT_EX, offsetof(RecordGatewayObject, error), RETRACE_READONLY, nullptr},
    {"__vectorcalloffset__", RETRACE_T_PYSSIZET, offsetof(RecordGatewayObject, vectorcall), RETRACE_READONLY, nullptr},
    {"__weaklistoffset__", RETRACE_T_PYSSIZET, offsetof(RecordGatewayObject, weakreflist), RETRACE_READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};
static PyMemberDef ReplayGateway_members[] = {
    {"gate", RETRACE_T_OBJECT_EX, offsetof(ReplayGatewayObject, gate), RETRACE_READONLY, nullptr},
    {"target", RETRACE_T_OBJECT_EX, offsetof(ReplayGatewayObject, target), RETRACE_READONLY, nullptr},
    {"replay", RETRACE_T_OBJECT_EX, offsetof(ReplayGatewayObject, replay), RETRACE_READONLY, nullptr},
    {"__vectorcalloffset__", RETRACE_T_PYSSIZET, offsetof(ReplayGatewayObject, vectorcall), RETRACE_READONLY, nullptr},
    {"__weaklistoffset__", RETRACE_T_PYSSIZET, offsetof(ReplayGatewayObject, weakreflist), RETRACE_READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

static PyType_Slot RecordGateway_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(RecordGateway_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(RecordGateway_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(RecordGateway_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(RecordGateway_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(Gateway_descr_get)},
    {Py_tp_members, RecordGateway_members},
    {Py_tp_getset, RecordGateway_getset},
    {Py_tp_repr, reinterpret_cast<void*>(RecordGateway_repr)},
    {Py_tp_doc, const_cast<char*>(
        "RecordGateway(gate, target, before=None, after=None, error=None): records an internal->external call.")},
    {0, nullptr},
};
static PyType_Slot ReplayGateway_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(ReplayGateway_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(ReplayGateway_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(ReplayGateway_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(ReplayGateway_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(Gateway_descr_get)},
    {Py_tp_members, ReplayGateway_members},
    {Py_tp_getset, ReplayGateway_getset},
    {Py_tp_repr, reinterpret_cast<void*>(ReplayGateway_repr)},
    {Py_tp_doc, const_cast<char*>("ReplayGateway(gate, target, replay): replay() while INTERNAL, else target().")},
    {0, nullptr},
};

// METHOD_DESCRIPTOR: `obj.method(x)` calls gateway(obj, x) without creating a
// bound method (the interpreter's LOAD_METHOD fast path), as for functions.
static constexpr unsigned long GATEWAY_FLAGS = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
                                               Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR;

static PyType_Spec RecordGateway_spec = {
    "retracesoftware.utils._utils.RecordGateway", sizeof(RecordGatewayObject), 0, GATEWAY_FLAGS,
    RecordGateway_slots,
};
static PyType_Spec ReplayGateway_spec = {
    "retracesoftware.utils._utils.ReplayGateway", sizeof(ReplayGatewayObject), 0, GATEWAY_FLAGS,
    ReplayGateway_slots,
};

int init_gateways(PyObject* module) {
    if (add_type(module, &RecordGateway_spec, &RecordGatewayType, "RecordGateway") < 0) return -1;
    if (add_type(module, &ReplayGateway_spec, &ReplayGatewayType, "ReplayGateway") < 0) return -1;
    return 0;
}

}  // namespace retrace::utils
