// MethodGateway and NewGateway: the per-instance boundary of patched types.
//
// MethodGateway(bound, gateway, real) sits in a patched type's dict in place
// of a method.  Per call it checks, natively, whether `self` (the first
// argument) is bound -- `id(self) in bound` -- and calls `gateway` (a
// Record/ReplayGateway) if so, `real` otherwise.  `bound` is owned by the
// caller (proxy's System: a dict keyed by id()); an exact dict is probed
// directly, anything else through its __contains__.
//
// NewGateway(cls, gate, on_new) sits in a patched type's dict as `__new__`.
// It always runs the type's original allocation, then, when the gate's phase
// is INTERNAL, calls `on_new(obj)` (which binds the object) and returns obj.
// The original allocation is resolved once, at construction, before the
// type is patched: the nearest `__new__` along the MRO.  If that is a C
// type's `tp_new` (the builtin `T.__new__`), its function pointer is kept and
// called directly -- going through `T.__new__` after patching would hit
// CPython's "T.__new__(S) is not safe" check, because the patched type's
// tp_new has become slot_tp_new.  `object.__new__` gets object's argument
// rules (extra arguments are dropped when the type defines __init__, else
// TypeError).  A Python-level `__new__` is called as a function.
//
// GIL: everything here runs with the GIL held.
#include "utils.h"

namespace retrace::utils {

static PyTypeObject* MethodGatewayType = nullptr;
static PyTypeObject* NewGatewayType = nullptr;
static PyObject* str_new = nullptr;  // interned "__new__", set once at module init

// ------------------------------------------------------------ MethodGateway

struct MethodGatewayObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* bound;
    PyObject* gateway;
    PyObject* real;
    PyObject* weakreflist;
};

// 1: bound, 0: not, -1: error.
static inline int is_bound(PyObject* bound, PyObject* obj) {
    PyObject* key = PyLong_FromVoidPtr(obj);  // == id(obj)
    if (!key) return -1;
    int r = PyDict_CheckExact(bound) ? PyDict_Contains(bound, key) : PySequence_Contains(bound, key);
    Py_DECREF(key);
    return r;
}

static PyObject* MethodGateway_vectorcall(PyObject* op, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* self = reinterpret_cast<MethodGatewayObject*>(op);
    if (PyVectorcall_NARGS(nargsf) < 1) [[unlikely]] {
        PyErr_Format(PyExc_TypeError, "%R needs its instance as first argument", op);
        return nullptr;
    }
    int r = is_bound(self->bound, args[0]);
    if (r < 0) return nullptr;
    return PyObject_Vectorcall(r ? self->gateway : self->real, args, nargsf, kwnames);
}

static PyObject* MethodGateway_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"bound", "gateway", "real", nullptr};
    PyObject *bound, *gateway, *real;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:MethodGateway", const_cast<char**>(kwlist), &bound,
                                     &gateway, &real))
        return nullptr;
    if (!PyDict_CheckExact(bound) && !PySequence_Check(bound) && !PyAnySet_Check(bound) &&
        !PyObject_HasAttrString(bound, "__contains__")) {
        PyErr_Format(PyExc_TypeError, "bound must be a dict or set of ids, got %.200s", Py_TYPE(bound)->tp_name);
        return nullptr;
    }
    if (!PyCallable_Check(gateway) || !PyCallable_Check(real)) {
        PyErr_Format(PyExc_TypeError, "gateway and real must be callable, got %.200s and %.200s",
                     Py_TYPE(gateway)->tp_name, Py_TYPE(real)->tp_name);
        return nullptr;
    }
    auto* self = reinterpret_cast<MethodGatewayObject*>(type->tp_alloc(type, 0));
    if (!self) return nullptr;
    self->vectorcall = MethodGateway_vectorcall;
    self->bound = Py_NewRef(bound);
    self->gateway = Py_NewRef(gateway);
    self->real = Py_NewRef(real);
    self->weakreflist = nullptr;
    return reinterpret_cast<PyObject*>(self);
}

static int MethodGateway_traverse(PyObject* op, visitproc visit, void* arg) {
    auto* self = reinterpret_cast<MethodGatewayObject*>(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->bound);
    Py_VISIT(self->gateway);
    Py_VISIT(self->real);
    return 0;
}

static int MethodGateway_clear(PyObject* op) {
    auto* self = reinterpret_cast<MethodGatewayObject*>(op);
    // Stay callable after a GC clear (the vectorcall reads fields unchecked):
    // an empty dict binds nothing, so `real` (None: a TypeError) is called.
    PyObject* empty = PyDict_New();
    if (!empty) return -1;
    Py_SETREF(self->bound, empty);
    Py_SETREF(self->gateway, Py_NewRef(Py_None));
    Py_SETREF(self->real, Py_NewRef(Py_None));
    return 0;
}

static void MethodGateway_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<MethodGatewayObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    Py_CLEAR(self->bound);
    Py_CLEAR(self->gateway);
    Py_CLEAR(self->real);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject* MethodGateway_descr_get(PyObject* self, PyObject* obj, PyObject*) {
    if (obj == nullptr) return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject* real_attr(PyObject* op, const char* name) {
    PyObject* v = PyObject_GetAttrString(reinterpret_cast<MethodGatewayObject*>(op)->real, name);
    if (!v) {
        PyErr_Clear();
        return PyUnicode_FromString("MethodGateway");
    }
    return v;
}
static PyObject* MethodGateway_get_name(PyObject* op, void*) { return real_attr(op, "__name__"); }
static PyObject* MethodGateway_get_wrapped(PyObject* op, void*) {
    return Py_NewRef(reinterpret_cast<MethodGatewayObject*>(op)->real);
}
static PyObject* MethodGateway_repr(PyObject* op) {
    return PyUnicode_FromFormat("<MethodGateway for %R>", reinterpret_cast<MethodGatewayObject*>(op)->real);
}

static PyGetSetDef MethodGateway_getset[] = {
    {"__name__", MethodGateway_get_name, nullptr, "the real method's __name__", nullptr},
    {"__wrapped__", MethodGateway_get_wrapped, nullptr, "the real method", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

static PyMemberDef MethodGateway_members[] = {
    {"bound", RETRACE_T_OBJECT_EX, offsetof(MethodGatewayObject, bound), RETRACE_READONLY, nullptr},
    {"gateway", RETRACE_T_OBJECT_EX, offsetof(MethodGatewayObject, gateway), RETRACE_READONLY, nullptr},
    {"real", RETRACE_T_OBJECT_EX, offsetof(MethodGatewayObject, real), RETRACE_READONLY, nullptr},
    {"__vectorcalloffset__", RETRACE_T_PYSSIZET, offsetof(MethodGatewayObject, vectorcall), RETRACE_READONLY,
     nullptr},
    {"__weaklistoffset__", RETRACE_T_PYSSIZET, offsetof(MethodGatewayObject, weakreflist), RETRACE_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

static PyType_Slot MethodGateway_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(MethodGateway_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(MethodGateway_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(MethodGateway_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(MethodGateway_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(MethodGateway_descr_get)},
    {Py_tp_members, MethodGateway_members},
    {Py_tp_getset, MethodGateway_getset},
    {Py_tp_repr, reinterpret_cast<void*>(MethodGateway_repr)},
    {Py_tp_doc, const_cast<char*>("MethodGateway(bound, gateway, real): gateway(self, ...) when id(self) in "
                                  "bound, else real(self, ...). Binds like a function.")},
    {0, nullptr},
};

static PyType_Spec MethodGateway_spec = {
    "retracesoftware.utils._utils.MethodGateway", sizeof(MethodGatewayObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    MethodGateway_slots,
};

// --------------------------------------------------------------- NewGateway

struct NewGatewayObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* cls;
    GateObject* gate;
    PyObject* on_new;    // Py_None: nothing to do
    PyObject* original;  // the `__new__` found along the MRO (for __wrapped__)
    newfunc native;      // C tp_new to call, or nullptr
    PyObject* python;    // Python-level __new__ to call when native is nullptr
    PyObject* weakreflist;
};

// New reference to the `__new__` entry in `tp`'s own dict, nullptr (no error)
// if absent.
static PyObject* own_new(PyTypeObject* tp) {
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS: static builtin dicts live in the interpreter
    PyObject* dict = PyType_GetDict(tp);
#else
    PyObject* dict = Py_XNewRef(tp->tp_dict);
#endif
    if (!dict) return nullptr;
    PyObject* v = PyDict_GetItemWithError(dict, str_new);
    Py_XINCREF(v);
    Py_DECREF(dict);
    return v;
}

static PyObject* NewGateway_vectorcall(PyObject* op, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* self = reinterpret_cast<NewGatewayObject*>(op);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1 || !PyType_Check(args[0])) [[unlikely]] {
        PyErr_Format(PyExc_TypeError, "%s.__new__(X): X is not a type object",
                     reinterpret_cast<PyTypeObject*>(self->cls)->tp_name);
        return nullptr;
    }
    auto* subtype = reinterpret_cast<PyTypeObject*>(args[0]);
    if (!PyType_IsSubtype(subtype, reinterpret_cast<PyTypeObject*>(self->cls))) [[unlikely]] {
        PyErr_Format(PyExc_TypeError, "%s.__new__(%s): %s is not a subtype of %s",
                     reinterpret_cast<PyTypeObject*>(self->cls)->tp_name, subtype->tp_name, subtype->tp_name,
                     reinterpret_cast<PyTypeObject*>(self->cls)->tp_name);
        return nullptr;
    }
    PyObject* obj;
    if (self->native) {
        Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
        Py_ssize_t npos = nargs - 1;
        if (self->native == PyBaseObject_Type.tp_new) {
            // object.__new__'s own rule, as if the type had not been patched.
            if ((npos || nkw) && subtype->tp_init == PyBaseObject_Type.tp_init) {
                PyErr_Format(PyExc_TypeError, "%.200s() takes no arguments", subtype->tp_name);
                return nullptr;
            }
            npos = 0;
            nkw = 0;
        }
        PyObject* tuple = PyTuple_New(npos);
        if (!tuple) return nullptr;
        for (Py_ssize_t i = 0; i < npos; i++) PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[1 + i]));
        PyObject* kw = nullptr;
        if (nkw) {
            kw = PyDict_New();
            if (!kw) {
                Py_DECREF(tuple);
                return nullptr;
            }
            for (Py_ssize_t i = 0; i < nkw; i++) {
                if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
                    Py_DECREF(tuple);
                    Py_DECREF(kw);
                    return nullptr;
                }
            }
        }
        obj = self->native(subtype, tuple, kw);
        Py_DECREF(tuple);
        Py_XDECREF(kw);
    } else {
        obj = PyObject_Vectorcall(self->python, args, nargsf, kwnames);
    }
    if (!obj) return nullptr;
    if (self->on_new != Py_None && gate_get(self->gate) == INTERNAL) {
        PyObject* r = PyObject_CallOneArg(self->on_new, obj);
        if (!r) {
            Py_DECREF(obj);
            return nullptr;
        }
        Py_DECREF(r);
    }
    return obj;
}

static PyObject* NewGateway_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"cls", "gate", "on_new", nullptr};
    PyObject *cls, *gate, *on_new = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:NewGateway", const_cast<char**>(kwlist), &cls, &gate,
                                     &on_new))
        return nullptr;
    if (!PyType_Check(cls)) {
        PyErr_Format(PyExc_TypeError, "cls must be a type, got %.200s", Py_TYPE(cls)->tp_name);
        return nullptr;
    }
    if (!PyObject_TypeCheck(gate, GateType)) {
        PyErr_Format(PyExc_TypeError, "gate must be a Gate, got %.200s", Py_TYPE(gate)->tp_name);
        return nullptr;
    }
    if (on_new != Py_None && !PyCallable_Check(on_new)) {
        PyErr_Format(PyExc_TypeError, "on_new must be callable or None, got %.200s", Py_TYPE(on_new)->tp_name);
        return nullptr;
    }
    auto* tp = reinterpret_cast<PyTypeObject*>(cls);
    if (!(tp->tp_flags & Py_TPFLAGS_READY) && PyType_Ready(tp) < 0) return nullptr;
    // The nearest __new__ along the MRO.
    PyObject* mro = tp->tp_mro;
    PyObject* found = nullptr;
    Py_ssize_t n = mro ? PyTuple_GET_SIZE(mro) : 0;
    for (Py_ssize_t i = 0; i < n && !found; i++) {
        found = own_new(reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(mro, i)));
        if (!found && PyErr_Occurred()) return nullptr;
    }
    if (!found) {
        PyErr_Format(PyExc_TypeError, "NewGateway: %s has no __new__", tp->tp_name);
        return nullptr;
    }
    newfunc native = nullptr;
    PyObject* python = nullptr;
    // A C type's tp_new is exposed as a builtin bound to that type.
    if (PyCFunction_Check(found) && PyCFunction_GET_SELF(found) && PyType_Check(PyCFunction_GET_SELF(found))) {
        native = reinterpret_cast<PyTypeObject*>(PyCFunction_GET_SELF(found))->tp_new;
    }
    if (!native) {
        python = PyObject_GetAttr(cls, str_new);  // staticmethod unwrapped
        if (!python) {
            Py_DECREF(found);
            return nullptr;
        }
    }
    auto* self = reinterpret_cast<NewGatewayObject*>(type->tp_alloc(type, 0));
    if (!self) {
        Py_DECREF(found);
        Py_XDECREF(python);
        return nullptr;
    }
    self->vectorcall = NewGateway_vectorcall;
    self->cls = Py_NewRef(cls);
    self->gate = reinterpret_cast<GateObject*>(Py_NewRef(gate));
    self->on_new = Py_NewRef(on_new);
    self->original = found;
    self->native = native;
    self->python = python;
    self->weakreflist = nullptr;
    return reinterpret_cast<PyObject*>(self);
}

static int NewGateway_traverse(PyObject* op, visitproc visit, void* arg) {
    auto* self = reinterpret_cast<NewGatewayObject*>(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->cls);
    Py_VISIT(reinterpret_cast<PyObject*>(self->gate));
    Py_VISIT(self->on_new);
    Py_VISIT(self->original);
    Py_VISIT(self->python);
    return 0;
}

static int NewGateway_clear(PyObject* op) {
    auto* self = reinterpret_cast<NewGatewayObject*>(op);
    // cls and gate stay (needed unchecked by the vectorcall; a type cannot be
    // freed while its dict holds us anyway).
    Py_SETREF(self->on_new, Py_NewRef(Py_None));
    return 0;
}

static void NewGateway_dealloc(PyObject* op) {
    auto* self = reinterpret_cast<NewGatewayObject*>(op);
    PyTypeObject* tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->weakreflist) PyObject_ClearWeakRefs(op);
    Py_CLEAR(self->cls);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->on_new);
    Py_CLEAR(self->original);
    Py_CLEAR(self->python);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject* NewGateway_get_wrapped(PyObject* op, void*) {
    return Py_NewRef(reinterpret_cast<NewGatewayObject*>(op)->original);
}
static PyObject* NewGateway_get_name(PyObject*, void*) { return PyUnicode_FromString("__new__"); }
static PyObject* NewGateway_repr(PyObject* op) {
    return PyUnicode_FromFormat("<NewGateway for %s>",
                                reinterpret_cast<PyTypeObject*>(reinterpret_cast<NewGatewayObject*>(op)->cls)->tp_name);
}

static PyGetSetDef NewGateway_getset[] = {
    {"__wrapped__", NewGateway_get_wrapped, nullptr, "the original __new__ found along the MRO", nullptr},
    {"__name__", NewGateway_get_name, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

static PyMemberDef NewGateway_members[] = {
    {"cls", RETRACE_T_OBJECT_EX, offsetof(NewGatewayObject, cls), RETRACE_READONLY, nullptr},
    {"gate", RETRACE_T_OBJECT_EX, offsetof(NewGatewayObject, gate), RETRACE_READONLY, nullptr},
    {"on_new", RETRACE_T_OBJECT_EX, offsetof(NewGatewayObject, on_new), RETRACE_READONLY, nullptr},
    {"__vectorcalloffset__", RETRACE_T_PYSSIZET, offsetof(NewGatewayObject, vectorcall), RETRACE_READONLY, nullptr},
    {"__weaklistoffset__", RETRACE_T_PYSSIZET, offsetof(NewGatewayObject, weakreflist), RETRACE_READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

// No tp_descr_get: in a type's dict it behaves as a staticmethod, which is
// what `__new__` must be (slot_tp_new calls type.__new__(type, ...)).
static PyType_Slot NewGateway_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(NewGateway_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(NewGateway_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(NewGateway_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(NewGateway_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_members, NewGateway_members},
    {Py_tp_getset, NewGateway_getset},
    {Py_tp_repr, reinterpret_cast<void*>(NewGateway_repr)},
    {Py_tp_doc, const_cast<char*>("NewGateway(cls, gate, on_new=None): a __new__ that runs cls's original "
                                  "allocation, then on_new(obj) when the gate's phase is INTERNAL.")},
    {0, nullptr},
};

static PyType_Spec NewGateway_spec = {
    "retracesoftware.utils._utils.NewGateway", sizeof(NewGatewayObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_VECTORCALL,
    NewGateway_slots,
};

int init_type_gateways(PyObject* module) {
    if (!str_new) {
        str_new = PyUnicode_InternFromString("__new__");
        if (!str_new) return -1;
    }
    if (add_type(module, &MethodGateway_spec, &MethodGatewayType, "MethodGateway") < 0) return -1;
    if (add_type(module, &NewGateway_spec, &NewGatewayType, "NewGateway") < 0) return -1;
    return 0;
}

}  // namespace retrace::utils
