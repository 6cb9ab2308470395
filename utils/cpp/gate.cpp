// Gate (thread-local phase cell), its `using` context manager, the C API
// capsule, and the helpers every type of _utils shares (exception
// fetch/restore, add_type).  The gateways are in gateways.cpp,
// type_gateways.cpp, record_call.cpp and replay_call.cpp.
//
// Phase storage.  Each Gate owns a small integer `slot`, handed out by a
// free-list allocator (GIL-protected).  Each thread owns a thread_local array
// of 64-bit cells indexed by slot; a cell holds (generation << 2 | phase).
// Every Gate gets a fresh, never reused generation number, so a slot recycled
// from a dead Gate reads as DISABLED in every thread that had set the old
// Gate's phase: get/set are O(1) and need no per-thread cleanup when a Gate
// dies.  The array grows on the first set of a slot beyond its size; the
// thread_local std::vector that owns it is freed at thread exit.
//
// The raw pointer/size pair is trivially-initialised thread_local (no TLS
// init guard on the fast path); the owning vector is only touched on growth.

#include "utils.h"

#include <vector>

namespace retrace::utils {

namespace {

thread_local std::vector<uint64_t> tl_cells_owner;

// Slot allocator: process-wide because thread_local storage is (module state
// cannot hold per-thread data).  Only touched with the GIL held.
struct SlotAllocator {
    std::vector<uint32_t> free_slots;
    uint32_t next_slot = 0;
    uint64_t next_generation = 1;  // generation 0 == "never set"
};
SlotAllocator& allocator() {
    static SlotAllocator instance;
    return instance;
}

}  // namespace

thread_local GateCells tl_gate_cells RETRACE_TLS_IE = {nullptr, 0};

PyTypeObject* GateType = nullptr;
static PyTypeObject* GateUsingType = nullptr;

void grow_gate_cells(uint32_t slot) {
    size_t want = tl_gate_cells.n ? tl_gate_cells.n : 16;
    while (want <= slot) want *= 2;
    tl_cells_owner.resize(want, 0);
    tl_gate_cells.cells = tl_cells_owner.data();
    tl_gate_cells.n = tl_cells_owner.size();
}

// Validates a Python phase value; returns -1 with an exception set.
static int phase_from_object(PyObject* value) {
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError,
                     "phase must be an int (DISABLED=0, INTERNAL=1, EXTERNAL=2), got %.200s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < 0 || v > 2) {
        PyErr_Format(PyExc_ValueError,
                     "phase must be DISABLED=0, INTERNAL=1 or EXTERNAL=2, got %R", value);
        return -1;
    }
    return static_cast<int>(v);
}

// ------------------------------------------------------------------ Gate type

static PyObject* Gate_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Gate() takes no arguments");
        return nullptr;
    }
    auto* self = reinterpret_cast<GateObject*>(type->tp_alloc(type, 0));
    if (!self) return nullptr;
    SlotAllocator& alloc = allocator();
    if (!alloc.free_slots.empty()) {
        self->slot = alloc.free_slots.back();
        alloc.free_slots.pop_back();
    } else {
        self->slot = alloc.next_slot++;
    }
    self->generation = alloc.next_generation++;
    self->weakreflist = nullptr;
    return reinterpret_cast<PyObject*>(self);
}

static void Gate_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<GateObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    allocator().free_slots.push_back(self->slot);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject* Gate_get_phase(PyObject* self, void*) {
    return PyLong_FromLong(gate_get(reinterpret_cast<GateObject*>(self)));
}

static int Gate_set_phase(PyObject* self, PyObject* value, void*) {
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete Gate.phase");
        return -1;
    }
    int phase = phase_from_object(value);
    if (phase < 0) return -1;
    gate_set(reinterpret_cast<GateObject*>(self), phase);
    return 0;
}

static PyObject* Gate_swap(PyObject* self, PyObject* value) {
    int phase = phase_from_object(value);
    if (phase < 0) return nullptr;
    auto* gate = reinterpret_cast<GateObject*>(self);
    int old = gate_get(gate);
    gate_set(gate, phase);
    return PyLong_FromLong(old);
}

struct GateUsingObject {
    PyObject_HEAD
    GateObject* gate;
    int phase;
    int saved;
};

static PyObject* Gate_using(PyObject* self, PyObject* value) {
    int phase = phase_from_object(value);
    if (phase < 0) return nullptr;
    auto* ctx = PyObject_New(GateUsingObject, GateUsingType);
    if (!ctx) return nullptr;
    Py_INCREF(self);
    ctx->gate = reinterpret_cast<GateObject*>(self);
    ctx->phase = phase;
    ctx->saved = DISABLED;
    return reinterpret_cast<PyObject*>(ctx);
}

static PyObject* Gate_call(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "Gate.call(phase, fn, /, *args, **kwargs) needs phase and fn");
        return nullptr;
    }
    int phase = phase_from_object(args[0]);
    if (phase < 0) return nullptr;
    auto* gate = reinterpret_cast<GateObject*>(self);
    int old = gate_get(gate);
    gate_set(gate, phase);
    // args[1] is fn; args + 2 are its arguments.  args[1] may be overwritten
    // temporarily by the callee (PY_VECTORCALL_ARGUMENTS_OFFSET) and restored.
    PyObject* result = PyObject_Vectorcall(args[1], args + 2,
                                           static_cast<size_t>(nargs - 2) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                           kwnames);
    gate_set(gate, old);
    return result;
}

static PyObject* Gate_repr(PyObject* self) {
    return PyUnicode_FromFormat("<Gate phase=%d>", gate_get(reinterpret_cast<GateObject*>(self)));
}

static PyGetSetDef Gate_getset[] = {
    {"phase", Gate_get_phase, Gate_set_phase, "this thread's phase (DISABLED=0, INTERNAL=1, EXTERNAL=2)", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

static PyMethodDef Gate_methods[] = {
    {"swap", Gate_swap, METH_O, "swap(phase) -> old phase"},
    {"using", Gate_using, METH_O, "using(phase): context manager setting the phase, restoring it on exit"},
    {"call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Gate_call)),
     METH_FASTCALL | METH_KEYWORDS,
     "call(phase, fn, /, *args, **kwargs): run fn with the phase set; restore it on return and on exception"},
    {nullptr, nullptr, 0, nullptr},
};

static PyMemberDef Gate_members[] = {
    {"__weaklistoffset__", RETRACE_T_PYSSIZET, offsetof(GateObject, weakreflist), RETRACE_READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

static PyType_Slot Gate_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(Gate_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(Gate_dealloc)},
    {Py_tp_getset, Gate_getset},
    {Py_tp_methods, Gate_methods},
    {Py_tp_members, Gate_members},
    {Py_tp_repr, reinterpret_cast<void*>(Gate_repr)},
    {Py_tp_doc, const_cast<char*>("Gate(): a thread-local phase cell; a thread that never set it reads DISABLED.")},
    {0, nullptr},
};

static PyType_Spec Gate_spec = {
    "retracesoftware.utils._utils.Gate", sizeof(GateObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, Gate_slots,
};

// ------------------------------------------------------------- _GateUsing

static void GateUsing_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<GateUsingObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    Py_XDECREF(self->gate);
    PyObject_Free(op);
    Py_DECREF(tp);
}

static PyObject* GateUsing_enter(PyObject* op, PyObject*) {
    auto* self = reinterpret_cast<GateUsingObject*>(op);
    self->saved = gate_get(self->gate);
    gate_set(self->gate, self->phase);
    return Py_NewRef(op);
}

static PyObject* GateUsing_exit(PyObject* op, PyObject* const*, Py_ssize_t) {
    auto* self = reinterpret_cast<GateUsingObject*>(op);
    gate_set(self->gate, self->saved);
    Py_RETURN_FALSE;
}

static PyMethodDef GateUsing_methods[] = {
    {"__enter__", GateUsing_enter, METH_NOARGS, nullptr},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(GateUsing_exit)), METH_FASTCALL, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

static PyType_Slot GateUsing_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(GateUsing_dealloc)},
    {Py_tp_methods, GateUsing_methods},
    {0, nullptr},
};

static PyType_Spec GateUsing_spec = {
    "retracesoftware.utils._utils._GateUsing", sizeof(GateUsingObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION, GateUsing_slots,
};

// ------------------------------------------------------------- exceptions

PyObject* fetch_exception() noexcept {
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS: 3.12 single-object exception state
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

void restore_exception(PyObject* exc) noexcept {
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS
    PyErr_SetRaisedException(exc);
#else
    PyObject* type = Py_NewRef(reinterpret_cast<PyObject*>(Py_TYPE(exc)));
    PyObject* tb = PyException_GetTraceback(exc);
    PyErr_Restore(type, exc, tb);
#endif
}

// ------------------------------------------------------------- C API capsule
//
// Other extensions (e.g. _stream) may read/write a Gate's phase without a
// Python call: PyCapsule_Import("retracesoftware.utils._utils._C_API", 0).
// Layout is versioned by `version`; fields are only ever appended.

struct RetraceUtilsCAPI {
    int version;
    PyTypeObject* gate_type;
    int (*gate_get)(PyObject* gate);           // no type check: caller checks gate_type
    void (*gate_set)(PyObject* gate, int phase);  // phase must be 0, 1 or 2
};

static int capi_gate_get(PyObject* gate) { return gate_get(reinterpret_cast<GateObject*>(gate)); }
static void capi_gate_set(PyObject* gate, int phase) { gate_set(reinterpret_cast<GateObject*>(gate), phase); }

static RetraceUtilsCAPI& capi() {
    static RetraceUtilsCAPI api{1, nullptr, capi_gate_get, capi_gate_set};
    return api;
}

int add_type(PyObject* module, PyType_Spec* spec, PyTypeObject** out, const char* name) {
    PyObject* type = PyType_FromSpec(spec);
    if (!type) return -1;
    *out = reinterpret_cast<PyTypeObject*>(type);
    Py_INCREF(type);  // one ref kept in *out for the life of the process
    if (PyModule_AddObject(module, name, type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

int init_gates(PyObject* module) {
    if (add_type(module, &Gate_spec, &GateType, "Gate") < 0) return -1;
    if (add_type(module, &GateUsing_spec, &GateUsingType, "_GateUsing") < 0) return -1;
    if (PyModule_AddIntConstant(module, "DISABLED", DISABLED) < 0) return -1;
    if (PyModule_AddIntConstant(module, "INTERNAL", INTERNAL) < 0) return -1;
    if (PyModule_AddIntConstant(module, "EXTERNAL", EXTERNAL) < 0) return -1;
    capi().gate_type = GateType;
    PyObject* capsule = PyCapsule_New(&capi(), "retracesoftware.utils._utils._C_API", nullptr);
    if (!capsule) return -1;
    if (PyModule_AddObject(module, "_C_API", capsule) < 0) {
        Py_DECREF(capsule);
        return -1;
    }
    return 0;
}

}  // namespace retrace::utils
