// retracesoftware.functional._functional — the C++ backend of the combinators.
//
// Every combinator is one heap type (PyType_FromSpec) sharing one layout: a
// variable-size object whose items are the PyObject* it holds ("fields"), plus
// a per-instance vectorcall pointer and one Py_ssize_t of auxiliary data. One
// layout means one traverse/clear/dealloc, so GC support cannot drift between
// types. Calls go through vectorcall (PEP 590) end to end: arguments are passed
// on as the caller's array wherever possible, never repacked into tuples.
//
// The contract (names, arities, error messages, attributes, reprs) is
// functional/README.md; functional/_python.py implements the same one and
// tests/functional/ proves they agree. Nothing here prints or aborts: errors
// are Python exceptions returned as nullptr. The GIL is held throughout (these
// are ordinary callables; nothing here releases it).
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pybind11/pybind11.h>

#if PY_VERSION_HEX < 0x030C0000  // PYVERSIONS: Py_T_* / Py_READONLY are 3.12+
#include <structmember.h>
#define RETRACE_T_PYSSIZET T_PYSSIZET
#define RETRACE_READONLY READONLY
#else
#define RETRACE_T_PYSSIZET Py_T_PYSSIZET
#define RETRACE_READONLY Py_READONLY
#endif

#include <cstddef>
#include <cstdint>

namespace {

// ---------------------------------------------------------------------------
// Shared layout and GC plumbing
// ---------------------------------------------------------------------------

struct Combinator {
    PyObject_VAR_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t aux;  // type-specific: partial = number of bound positionals, nth_arg = n
    // followed by Py_SIZE(self) PyObject* fields
};

inline PyObject** fields(PyObject* self) {
    return reinterpret_cast<PyObject**>(reinterpret_cast<Combinator*>(self) + 1);
}
inline Combinator* as_comb(PyObject* self) { return reinterpret_cast<Combinator*>(self); }

int comb_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(Py_TYPE(self));  // heap types are owned by their instances
    PyObject** f = fields(self);
    for (Py_ssize_t i = 0; i < Py_SIZE(self); ++i) Py_VISIT(f[i]);
    return 0;
}

int comb_clear(PyObject* self) {
    PyObject** f = fields(self);
    for (Py_ssize_t i = 0; i < Py_SIZE(self); ++i) Py_CLEAR(f[i]);
    return 0;
}

void comb_dealloc(PyObject* self) {
    PyTypeObject* tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    comb_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

// Allocate an instance with n zeroed fields (GC-tracked already; NULL fields
// are fine for traverse/clear).
PyObject* comb_alloc(PyTypeObject* type, Py_ssize_t n, vectorcallfunc call) {
    PyObject* self = type->tp_alloc(type, n);
    if (!self) return nullptr;
    as_comb(self)->vectorcall = call;
    as_comb(self)->aux = 0;
    return self;
}

// Store a new reference to v in field i.
inline void set_field(PyObject* self, Py_ssize_t i, PyObject* v) { fields(self)[i] = Py_NewRef(v); }

// ---------------------------------------------------------------------------
// Error helpers: the exact messages of the contract (README.md "Errors").
// ---------------------------------------------------------------------------

const char* plural(Py_ssize_t n) { return n == 1 ? "" : "s"; }

// type(obj).__name__ as a new str, for "must be callable, not <name>".
PyObject* type_name(PyObject* obj) { return PyType_GetName(Py_TYPE(obj)); }

bool ctor_no_kwargs(const char* name, PyObject* kwargs) {
    if (kwargs && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", name);
        return false;
    }
    return true;
}

bool ctor_exactly(const char* name, PyObject* args, Py_ssize_t n) {
    Py_ssize_t got = PyTuple_GET_SIZE(args);
    if (got != n) {
        PyErr_Format(PyExc_TypeError, "%s expected %zd argument%s, got %zd", name, n, plural(n), got);
        return false;
    }
    return true;
}

bool ctor_at_least(const char* name, PyObject* args, Py_ssize_t n) {
    Py_ssize_t got = PyTuple_GET_SIZE(args);
    if (got < n) {
        PyErr_Format(PyExc_TypeError, "%s expected at least %zd argument%s, got %zd", name, n, plural(n), got);
        return false;
    }
    return true;
}

// position is 1-based, as in "argument 2".
bool check_callable(const char* name, Py_ssize_t position, PyObject* obj) {
    if (PyCallable_Check(obj)) return true;
    PyObject* tn = type_name(obj);
    if (tn) {
        PyErr_Format(PyExc_TypeError, "%s() argument %zd must be callable, not %U", name, position, tn);
        Py_DECREF(tn);
    }
    return false;
}

PyObject* call_no_kwargs(const char* name) {
    PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", name);
    return nullptr;
}

PyObject* call_exactly_one(const char* name, Py_ssize_t given) {
    PyErr_Format(PyExc_TypeError, "%s() takes exactly one argument (%zd given)", name, given);
    return nullptr;
}

PyObject* call_at_least(const char* name, Py_ssize_t n, Py_ssize_t given) {
    PyErr_Format(PyExc_TypeError, "%s() takes at least %zd positional argument%s (%zd given)", name, n,
                 plural(n), given);
    return nullptr;
}

inline Py_ssize_t kwcount(PyObject* kwnames) { return kwnames ? PyTuple_GET_SIZE(kwnames) : 0; }

// PyObject_Vectorcall without its per-call PyThreadState_Get() and
// _Py_CheckFunctionResult() (both out-of-line calls from an extension). The
// check still happens once, when our own result returns to the interpreter;
// this matters because these calls are the whole cost of a combinator.
inline PyObject* vcall(PyObject* callable, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    vectorcallfunc func = PyVectorcall_Function(callable);
    if (func) return func(callable, args, nargsf, kwnames);
    return PyObject_Vectorcall(callable, args, nargsf, kwnames);
}

// Common check for "exactly one positional, no keywords" callables. Returns
// false with an exception set.
inline bool one_arg(const char* name, size_t nargsf, PyObject* kwnames) {
    if (kwcount(kwnames)) {
        call_no_kwargs(name);
        return false;
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1) {
        call_exactly_one(name, nargs);
        return false;
    }
    return true;
}

// A small on-stack argument buffer with heap spill, with one spare slot in
// front so callees may use PY_VECTORCALL_ARGUMENTS_OFFSET. Never throws.
class ArgBuffer {
public:
    explicit ArgBuffer(Py_ssize_t n) {
        if (n + 1 <= kSmall) {
            data_ = small_;
        } else {
            heap_ = static_cast<PyObject**>(PyMem_Malloc(sizeof(PyObject*) * static_cast<size_t>(n + 1)));
            data_ = heap_;
            if (!heap_) PyErr_NoMemory();
        }
    }
    ~ArgBuffer() {
        if (heap_) PyMem_Free(heap_);
    }
    ArgBuffer(const ArgBuffer&) = delete;
    ArgBuffer& operator=(const ArgBuffer&) = delete;
    bool ok() const { return data_ != nullptr; }
    PyObject** args() { return data_ + 1; }  // data_[0] is the spare slot

private:
    static constexpr Py_ssize_t kSmall = 9;
    PyObject* small_[kSmall];
    PyObject** heap_ = nullptr;
    PyObject** data_ = nullptr;
};

// ---------------------------------------------------------------------------
// repr helpers: "name(repr(a), repr(b), ...)" with name = type(self).__name__
// ---------------------------------------------------------------------------

// parts: a list of str; returns "name(" + ", ".join(parts) + ")". Steals parts.
PyObject* repr_from_parts(PyObject* self, PyObject* parts) {
    if (!parts) return nullptr;
    PyObject* name = PyType_GetName(Py_TYPE(self));
    PyObject* sep = name ? PyUnicode_FromString(", ") : nullptr;
    PyObject* inner = sep ? PyUnicode_Join(sep, parts) : nullptr;
    PyObject* out = inner ? PyUnicode_FromFormat("%U(%U)", name, inner) : nullptr;
    Py_XDECREF(inner);
    Py_XDECREF(sep);
    Py_XDECREF(name);
    Py_DECREF(parts);
    return out;
}

bool append_repr(PyObject* parts, PyObject* obj) {
    PyObject* r = PyObject_Repr(obj);
    if (!r) return false;
    int rc = PyList_Append(parts, r);
    Py_DECREF(r);
    return rc == 0;
}

// repr listing fields [start, Py_SIZE(self)).
PyObject* repr_fields(PyObject* self, Py_ssize_t start) {
    PyObject* parts = PyList_New(0);
    if (!parts) return nullptr;
    for (Py_ssize_t i = start; i < Py_SIZE(self); ++i) {
        if (!append_repr(parts, fields(self)[i])) {
            Py_DECREF(parts);
            return nullptr;
        }
    }
    return repr_from_parts(self, parts);
}

PyObject* repr_all_fields(PyObject* self) { return repr_fields(self, 0); }

// ---------------------------------------------------------------------------
// getters
// ---------------------------------------------------------------------------

PyObject* get_field(PyObject* self, void* closure) {
    return Py_NewRef(fields(self)[reinterpret_cast<intptr_t>(closure)]);
}

// tuple of fields [closure, Py_SIZE(self))
PyObject* get_field_tuple(PyObject* self, void* closure) {
    Py_ssize_t start = reinterpret_cast<intptr_t>(closure);
    Py_ssize_t n = Py_SIZE(self) - start;
    PyObject* t = PyTuple_New(n);
    if (!t) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) PyTuple_SET_ITEM(t, i, Py_NewRef(fields(self)[start + i]));
    return t;
}

#define FIELD(name, index, doc) {name, get_field, nullptr, doc, reinterpret_cast<void*>(index)}
#define FIELD_TUPLE(name, start, doc) {name, get_field_tuple, nullptr, doc, reinterpret_cast<void*>(start)}
#define GETSET_END {nullptr, nullptr, nullptr, nullptr, nullptr}

// __reduce_ex__: these objects hold arbitrary callables; refuse to pickle or
// copy them the same way in both backends.
PyObject* comb_reduce_ex(PyObject* self, PyObject*) {
    PyObject* name = PyType_GetName(Py_TYPE(self));
    if (name) {
        PyErr_Format(PyExc_TypeError, "cannot pickle '%U' object", name);
        Py_DECREF(name);
    }
    return nullptr;
}

PyMethodDef comb_methods[] = {
    {"__reduce_ex__", comb_reduce_ex, METH_O, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyMemberDef comb_members[] = {
    {"__vectorcalloffset__", RETRACE_T_PYSSIZET, offsetof(Combinator, vectorcall), RETRACE_READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

// ---------------------------------------------------------------------------
// compose / sequence
// ---------------------------------------------------------------------------

// Call fn(arg) with vectorcall; does not steal arg.
inline PyObject* call_one(PyObject* fn, PyObject* arg) {
    PyObject* stack[2] = {nullptr, arg};
    return vcall(fn, stack + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
}

PyObject* compose_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject** f = fields(self);
    Py_ssize_t n = Py_SIZE(self);
    PyObject* r = vcall(f[n - 1], args, nargsf, kwnames);
    for (Py_ssize_t i = n - 2; r && i >= 0; --i) {
        PyObject* next = call_one(f[i], r);
        Py_DECREF(r);
        r = next;
    }
    return r;
}

PyObject* sequence_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject** f = fields(self);
    Py_ssize_t n = Py_SIZE(self);
    PyObject* r = vcall(f[0], args, nargsf, kwnames);
    for (Py_ssize_t i = 1; r && i < n; ++i) {
        PyObject* next = call_one(f[i], r);
        Py_DECREF(r);
        r = next;
    }
    return r;
}

// Shared constructor of the variadic "tuple of callables" combinators.
PyObject* new_callables(PyTypeObject* type, PyObject* args, PyObject* kwargs, const char* name,
                        vectorcallfunc call) {
    if (!ctor_no_kwargs(name, kwargs) || !ctor_at_least(name, args, 1)) return nullptr;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    for (Py_ssize_t i = 0; i < n; ++i)
        if (!check_callable(name, i + 1, PyTuple_GET_ITEM(args, i))) return nullptr;
    PyObject* self = comb_alloc(type, n, call);
    if (!self) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) set_field(self, i, PyTuple_GET_ITEM(args, i));
    return self;
}

PyObject* compose_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_callables(type, args, kwargs, "compose", compose_call);
}
PyObject* sequence_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_callables(type, args, kwargs, "sequence", sequence_call);
}

PyGetSetDef compose_getset[] = {
    FIELD_TUPLE("functions", 0, "the composed functions, in the order given"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// and_ / or_ / not_
// ---------------------------------------------------------------------------

PyObject* and_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject** f = fields(self);
    for (Py_ssize_t i = 0; i < Py_SIZE(self); ++i) {
        PyObject* r = vcall(f[i], args, nargsf, kwnames);
        if (!r) return nullptr;
        int t = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (t < 0) return nullptr;
        if (!t) Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

PyObject* or_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject** f = fields(self);
    for (Py_ssize_t i = 0; i < Py_SIZE(self); ++i) {
        PyObject* r = vcall(f[i], args, nargsf, kwnames);
        if (!r) return nullptr;
        int t = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (t < 0) return nullptr;
        if (t) Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

PyObject* not_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject* r = vcall(fields(self)[0], args, nargsf, kwnames);
    if (!r) return nullptr;
    int t = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (t < 0) return nullptr;
    return Py_NewRef(t ? Py_False : Py_True);
}

PyObject* and_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_callables(type, args, kwargs, "and_", and_call);
}
PyObject* or_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_callables(type, args, kwargs, "or_", or_call);
}

// Shared constructor of "exactly N callables" combinators.
PyObject* new_fixed_callables(PyTypeObject* type, PyObject* args, PyObject* kwargs, const char* name,
                              Py_ssize_t n, vectorcallfunc call) {
    if (!ctor_no_kwargs(name, kwargs) || !ctor_exactly(name, args, n)) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i)
        if (!check_callable(name, i + 1, PyTuple_GET_ITEM(args, i))) return nullptr;
    PyObject* self = comb_alloc(type, n, call);
    if (!self) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) set_field(self, i, PyTuple_GET_ITEM(args, i));
    return self;
}

PyObject* not_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_fixed_callables(type, args, kwargs, "not_", 1, not_call);
}

PyGetSetDef predicates_getset[] = {
    FIELD_TUPLE("predicates", 0, "the predicates, in the order they are tried"),
    GETSET_END,
};
PyGetSetDef not_getset[] = {
    FIELD("predicate", 0, "the negated predicate"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// partial
// fields: [0] func, [1] bound keywords dict or NULL (none), [2] the bound
// keyword names as a tuple or NULL, [3 .. 3+aux) bound positionals, then the
// bound keyword values in the order of [2]. aux = number of bound positionals.
// Keeping names and values apart lets a call without keywords of its own pass
// the bound keywords straight through vectorcall, with no dict built.
// ---------------------------------------------------------------------------

constexpr Py_ssize_t kPartialArgs = 3;

PyObject* partial_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject** f = fields(self);
    PyObject* func = f[0];
    PyObject* bound_kw = f[1];
    PyObject* bound_names = f[2];
    Py_ssize_t nbound = as_comb(self)->aux;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwcount(kwnames);
    PyObject** bound = f + kPartialArgs;

    if (!bound_kw) {
        if (nbound == 0) return vcall(func, args, nargsf, kwnames);
        if (nbound == 1 && (nargsf & PY_VECTORCALL_ARGUMENTS_OFFSET)) {
            // The caller lent us args[-1] (PEP 590): put the bound argument
            // there instead of copying the arguments, and put it back after
            // (what CPython's functools.partial does too).
            PyObject** slot = const_cast<PyObject**>(args) - 1;
            PyObject* saved = *slot;
            *slot = bound[0];
            PyObject* r = vcall(func, slot, static_cast<size_t>(nargs + 1), kwnames);
            *slot = saved;
            return r;
        }
        ArgBuffer buf(nbound + nargs + nkw);
        if (!buf.ok()) return nullptr;
        PyObject** stack = buf.args();
        for (Py_ssize_t i = 0; i < nbound; ++i) stack[i] = bound[i];
        for (Py_ssize_t i = 0; i < nargs + nkw; ++i) stack[nbound + i] = args[i];
        return vcall(func, stack, static_cast<size_t>(nbound + nargs) | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
    }

    Py_ssize_t nbound_kw = PyTuple_GET_SIZE(bound_names);
    if (nkw == 0) {
        // Bound keywords only: positionals, then the bound values, named by
        // the bound names tuple.
        ArgBuffer buf(nbound + nargs + nbound_kw);
        if (!buf.ok()) return nullptr;
        PyObject** stack = buf.args();
        for (Py_ssize_t i = 0; i < nbound; ++i) stack[i] = bound[i];
        for (Py_ssize_t i = 0; i < nargs; ++i) stack[nbound + i] = args[i];
        for (Py_ssize_t i = 0; i < nbound_kw; ++i) stack[nbound + nargs + i] = bound[nbound + i];
        return vcall(func, stack, static_cast<size_t>(nbound + nargs) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                     bound_names);
    }

    // Both: merge into a fresh dict, call keywords override bound ones.
    PyObject* kw = PyDict_Copy(bound_kw);
    if (!kw) return nullptr;
    for (Py_ssize_t i = 0; i < nkw; ++i) {
        if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
            Py_DECREF(kw);
            return nullptr;
        }
    }
    ArgBuffer buf(nbound + nargs);
    if (!buf.ok()) {
        Py_DECREF(kw);
        return nullptr;
    }
    PyObject** stack = buf.args();
    for (Py_ssize_t i = 0; i < nbound; ++i) stack[i] = bound[i];
    for (Py_ssize_t i = 0; i < nargs; ++i) stack[nbound + i] = args[i];
    PyObject* r = PyObject_VectorcallDict(func, stack, static_cast<size_t>(nbound + nargs), kw);
    Py_DECREF(kw);
    return r;
}

PyObject* partial_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (!ctor_at_least("partial", args, 1)) return nullptr;
    PyObject* func = PyTuple_GET_ITEM(args, 0);
    if (!check_callable("partial", 1, func)) return nullptr;
    Py_ssize_t nbound = PyTuple_GET_SIZE(args) - 1;
    Py_ssize_t nbound_kw = kwargs ? PyDict_GET_SIZE(kwargs) : 0;
    PyObject* self = comb_alloc(type, kPartialArgs + nbound + nbound_kw, partial_call);
    if (!self) return nullptr;
    PyObject** f = fields(self);
    as_comb(self)->aux = nbound;
    set_field(self, 0, func);
    for (Py_ssize_t i = 0; i < nbound; ++i) set_field(self, kPartialArgs + i, PyTuple_GET_ITEM(args, i + 1));
    if (nbound_kw) {
        f[1] = PyDict_Copy(kwargs);
        f[2] = PyTuple_New(nbound_kw);
        if (!f[1] || !f[2]) {
            Py_DECREF(self);
            return nullptr;
        }
        PyObject *key, *value;
        Py_ssize_t pos = 0, i = 0;
        while (PyDict_Next(f[1], &pos, &key, &value)) {
            PyTuple_SET_ITEM(f[2], i, Py_NewRef(key));
            set_field(self, kPartialArgs + nbound + i, value);
            ++i;
        }
    }
    return self;
}

PyObject* partial_get_args(PyObject* self, void*) {
    Py_ssize_t nbound = as_comb(self)->aux;
    PyObject* t = PyTuple_New(nbound);
    if (!t) return nullptr;
    for (Py_ssize_t i = 0; i < nbound; ++i) PyTuple_SET_ITEM(t, i, Py_NewRef(fields(self)[kPartialArgs + i]));
    return t;
}

PyObject* partial_get_keywords(PyObject* self, void*) {
    PyObject* kw = fields(self)[1];
    return kw ? PyDict_Copy(kw) : PyDict_New();
}

PyObject* partial_repr(PyObject* self) {
    PyObject* parts = PyList_New(0);
    if (!parts) return nullptr;
    PyObject** f = fields(self);
    bool ok = append_repr(parts, f[0]);
    for (Py_ssize_t i = 0; ok && i < as_comb(self)->aux; ++i) ok = append_repr(parts, f[kPartialArgs + i]);
    if (ok && f[1]) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (ok && PyDict_Next(f[1], &pos, &key, &value)) {
            // keys come from **kwargs and are therefore str
            PyObject* s = PyUnicode_FromFormat("%S=%R", key, value);
            ok = s && PyList_Append(parts, s) == 0;
            Py_XDECREF(s);
        }
    }
    if (!ok) {
        Py_DECREF(parts);
        return nullptr;
    }
    return repr_from_parts(self, parts);
}

PyGetSetDef partial_getset[] = {
    FIELD("func", 0, "the wrapped callable"),
    {"args", partial_get_args, nullptr, "the bound positional arguments (tuple)", nullptr},
    {"keywords", partial_get_keywords, nullptr, "a copy of the bound keyword arguments (dict)", nullptr},
    GETSET_END,
};

// ---------------------------------------------------------------------------
// constantly / repeatedly
// ---------------------------------------------------------------------------

PyObject* constantly_call(PyObject* self, PyObject* const*, size_t, PyObject*) {
    return Py_NewRef(fields(self)[0]);
}

PyObject* constantly_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (!ctor_no_kwargs("constantly", kwargs) || !ctor_exactly("constantly", args, 1)) return nullptr;
    PyObject* self = comb_alloc(type, 1, constantly_call);
    if (self) set_field(self, 0, PyTuple_GET_ITEM(args, 0));
    return self;
}

PyGetSetDef constantly_getset[] = {
    FIELD("value", 0, "the value every call returns"),
    GETSET_END,
};

PyObject* repeatedly_call(PyObject* self, PyObject* const*, size_t, PyObject*) {
    return PyObject_CallNoArgs(fields(self)[0]);
}

PyObject* repeatedly_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_fixed_callables(type, args, kwargs, "repeatedly", 1, repeatedly_call);
}

PyGetSetDef func_getset[] = {
    FIELD("func", 0, "the wrapped callable"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// if_then_else: fields [condition, then, otherwise]
// ---------------------------------------------------------------------------

PyObject* if_then_else_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject** f = fields(self);
    PyObject* c = vcall(f[0], args, nargsf, kwnames);
    if (!c) return nullptr;
    int t = PyObject_IsTrue(c);
    Py_DECREF(c);
    if (t < 0) return nullptr;
    return vcall(t ? f[1] : f[2], args, nargsf, kwnames);
}

PyObject* if_then_else_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_fixed_callables(type, args, kwargs, "if_then_else", 3, if_then_else_call);
}

PyGetSetDef if_then_else_getset[] = {
    FIELD("condition", 0, "called first; its truth picks the branch"),
    FIELD("then", 1, "called when the condition is true"),
    FIELD("otherwise", 2, "called when the condition is false"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// dispatch: fields [default, pred0, fn0, pred1, fn1, ...]
// ---------------------------------------------------------------------------

PyObject* dispatch_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject** f = fields(self);
    for (Py_ssize_t i = 1; i < Py_SIZE(self); i += 2) {
        PyObject* r = vcall(f[i], args, nargsf, kwnames);
        if (!r) return nullptr;
        int t = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (t < 0) return nullptr;
        if (t) return vcall(f[i + 1], args, nargsf, kwnames);
    }
    return vcall(f[0], args, nargsf, kwnames);
}

PyObject* dispatch_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (!ctor_no_kwargs("dispatch", kwargs) || !ctor_exactly("dispatch", args, 2)) return nullptr;
    PyObject* cases = PySequence_Fast(PyTuple_GET_ITEM(args, 0), "dispatch() argument 1 must be an iterable of "
                                                                "(predicate, function) pairs");
    if (!cases) return nullptr;
    PyObject* deflt = PyTuple_GET_ITEM(args, 1);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(cases);
    PyObject* self = nullptr;
    // Validate every case before allocating.
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* c = PySequence_Fast_GET_ITEM(cases, i);
        if (!PyTuple_Check(c) || PyTuple_GET_SIZE(c) != 2) {
            PyObject* tn = type_name(c);
            if (tn) {
                PyErr_Format(PyExc_TypeError, "dispatch() case %zd must be a (predicate, function) tuple, not %U", i,
                             tn);
                Py_DECREF(tn);
            }
            goto fail;
        }
        for (int j = 0; j < 2; ++j) {
            PyObject* fn = PyTuple_GET_ITEM(c, j);
            if (!PyCallable_Check(fn)) {
                PyObject* tn = type_name(fn);
                if (tn) {
                    PyErr_Format(PyExc_TypeError, "dispatch() case %zd %s must be callable, not %U", i,
                                 j == 0 ? "predicate" : "function", tn);
                    Py_DECREF(tn);
                }
                goto fail;
            }
        }
    }
    if (!check_callable("dispatch", 2, deflt)) goto fail;
    self = comb_alloc(type, 1 + 2 * n, dispatch_call);
    if (!self) goto fail;
    set_field(self, 0, deflt);
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* c = PySequence_Fast_GET_ITEM(cases, i);
        set_field(self, 1 + 2 * i, PyTuple_GET_ITEM(c, 0));
        set_field(self, 2 + 2 * i, PyTuple_GET_ITEM(c, 1));
    }
    Py_DECREF(cases);
    return self;
fail:
    Py_DECREF(cases);
    return nullptr;
}

PyObject* dispatch_get_cases(PyObject* self, void*) {
    Py_ssize_t n = (Py_SIZE(self) - 1) / 2;
    PyObject* t = PyTuple_New(n);
    if (!t) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* pair = PyTuple_Pack(2, fields(self)[1 + 2 * i], fields(self)[2 + 2 * i]);
        if (!pair) {
            Py_DECREF(t);
            return nullptr;
        }
        PyTuple_SET_ITEM(t, i, pair);
    }
    return t;
}

PyObject* dispatch_repr(PyObject* self) {
    PyObject* parts = PyList_New(0);
    if (!parts) return nullptr;
    PyObject* cases = dispatch_get_cases(self, nullptr);
    bool ok = cases && append_repr(parts, cases) && append_repr(parts, fields(self)[0]);
    Py_XDECREF(cases);
    if (!ok) {
        Py_DECREF(parts);
        return nullptr;
    }
    return repr_from_parts(self, parts);
}

PyGetSetDef dispatch_getset[] = {
    {"cases", dispatch_get_cases, nullptr, "the (predicate, function) pairs, in order (tuple)", nullptr},
    FIELD("default", 0, "called when no predicate matches"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// memoize_one_arg: fields [func, cache dict]
// ---------------------------------------------------------------------------

PyObject* memoize_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (!one_arg("memoize_one_arg", nargsf, kwnames)) return nullptr;
    PyObject* cache = fields(self)[1];
    PyObject* key = args[0];
    PyObject* hit = PyDict_GetItemWithError(cache, key);  // borrowed
    if (hit) return Py_NewRef(hit);
    if (PyErr_Occurred()) return nullptr;  // unhashable key
    PyObject* r = call_one(fields(self)[0], key);
    if (!r) return nullptr;  // exceptions are not cached
    if (PyDict_SetItem(cache, key, r) < 0) {
        Py_DECREF(r);
        return nullptr;
    }
    return r;
}

PyObject* memoize_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (!ctor_no_kwargs("memoize_one_arg", kwargs) || !ctor_exactly("memoize_one_arg", args, 1)) return nullptr;
    PyObject* func = PyTuple_GET_ITEM(args, 0);
    if (!check_callable("memoize_one_arg", 1, func)) return nullptr;
    PyObject* cache = PyDict_New();
    if (!cache) return nullptr;
    PyObject* self = comb_alloc(type, 2, memoize_call);
    if (!self) {
        Py_DECREF(cache);
        return nullptr;
    }
    set_field(self, 0, func);
    fields(self)[1] = cache;
    return self;
}

PyObject* memoize_repr(PyObject* self) {
    PyObject* parts = PyList_New(0);
    if (parts && !append_repr(parts, fields(self)[0])) Py_CLEAR(parts);
    return repr_from_parts(self, parts);
}

PyGetSetDef memoize_getset[] = {
    FIELD("func", 0, "the memoized callable"),
    FIELD("cache", 1, "the live cache dict (argument -> result); clear() it to forget"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// nth_arg: fields [n as int]; aux = n
// ---------------------------------------------------------------------------

PyObject* nth_arg_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject*) {
    Py_ssize_t n = as_comb(self)->aux;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs <= n) {
        PyErr_Format(PyExc_TypeError, "nth_arg(%zd) takes at least %zd positional argument%s (%zd given)", n, n + 1,
                     plural(n + 1), nargs);
        return nullptr;
    }
    return Py_NewRef(args[n]);
}

PyObject* nth_arg_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (!ctor_no_kwargs("nth_arg", kwargs) || !ctor_exactly("nth_arg", args, 1)) return nullptr;
    PyObject* arg = PyTuple_GET_ITEM(args, 0);
    if (!PyLong_Check(arg)) {
        PyObject* tn = type_name(arg);
        if (tn) {
            PyErr_Format(PyExc_TypeError, "nth_arg() argument 1 must be int, not %U", tn);
            Py_DECREF(tn);
        }
        return nullptr;
    }
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return nullptr;  // OverflowError, as in Python
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "nth_arg() argument 1 must be >= 0, not %zd", n);
        return nullptr;
    }
    PyObject* self = comb_alloc(type, 1, nth_arg_call);
    if (!self) return nullptr;
    PyObject* n_obj = PyLong_FromSsize_t(n);  // an exact int even if given a bool/int subclass
    if (!n_obj) {
        Py_DECREF(self);
        return nullptr;
    }
    fields(self)[0] = n_obj;
    as_comb(self)->aux = n;
    return self;
}

PyGetSetDef nth_arg_getset[] = {
    FIELD("n", 0, "the index of the positional argument returned"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// isinstance_of: fields [cls]
// ---------------------------------------------------------------------------

PyObject* isinstance_of_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (!one_arg("isinstance_of", nargsf, kwnames)) return nullptr;
    int r = PyObject_IsInstance(args[0], fields(self)[0]);
    if (r < 0) return nullptr;
    return Py_NewRef(r ? Py_True : Py_False);
}

PyObject* isinstance_of_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (!ctor_no_kwargs("isinstance_of", kwargs) || !ctor_exactly("isinstance_of", args, 1)) return nullptr;
    PyObject* cls = PyTuple_GET_ITEM(args, 0);
    bool ok = PyType_Check(cls);
    if (!ok && PyTuple_Check(cls)) {
        ok = true;
        for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(cls); ++i) ok = PyType_Check(PyTuple_GET_ITEM(cls, i));
    }
    if (!ok) {
        PyObject* tn = type_name(cls);
        if (tn) {
            PyErr_Format(PyExc_TypeError, "isinstance_of() argument 1 must be a type or a tuple of types, not %U", tn);
            Py_DECREF(tn);
        }
        return nullptr;
    }
    PyObject* self = comb_alloc(type, 1, isinstance_of_call);
    if (self) set_field(self, 0, cls);
    return self;
}

PyGetSetDef isinstance_of_getset[] = {
    FIELD("cls", 0, "the type (or tuple of types) tested against"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// walker: fields [func]
// Recurses into exact tuple, list and dict (values only; keys are kept), and
// rebuilds a container of the same exact type; everything else is a leaf and
// is replaced by func(leaf). Dicts are walked over a snapshot of their items;
// lists are walked by index while the index is below the current length (the
// same as Python's list iterator).
// ---------------------------------------------------------------------------

PyObject* walk(PyObject* func, PyObject* obj) {
    PyTypeObject* tp = Py_TYPE(obj);
    if (tp != &PyTuple_Type && tp != &PyList_Type && tp != &PyDict_Type) return call_one(func, obj);
    if (Py_EnterRecursiveCall(" while walking a nested container")) return nullptr;
    PyObject* out = nullptr;
    if (tp == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(obj);
        out = PyTuple_New(n);
        for (Py_ssize_t i = 0; out && i < n; ++i) {
            PyObject* v = walk(func, PyTuple_GET_ITEM(obj, i));
            if (!v) {
                Py_CLEAR(out);
                break;
            }
            PyTuple_SET_ITEM(out, i, v);
        }
    } else if (tp == &PyList_Type) {
        out = PyList_New(0);
        for (Py_ssize_t i = 0; out && i < PyList_GET_SIZE(obj); ++i) {
            PyObject* item = Py_NewRef(PyList_GET_ITEM(obj, i));  // func may mutate the list
            PyObject* v = walk(func, item);
            Py_DECREF(item);
            if (!v || PyList_Append(out, v) < 0) {
                Py_XDECREF(v);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(v);
        }
    } else {
        PyObject* items = PyDict_Items(obj);  // snapshot: list of (key, value)
        out = items ? PyDict_New() : nullptr;
        for (Py_ssize_t i = 0; out && i < PyList_GET_SIZE(items); ++i) {
            PyObject* kv = PyList_GET_ITEM(items, i);
            PyObject* v = walk(func, PyTuple_GET_ITEM(kv, 1));
            if (!v || PyDict_SetItem(out, PyTuple_GET_ITEM(kv, 0), v) < 0) {
                Py_XDECREF(v);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(v);
        }
        Py_XDECREF(items);
    }
    Py_LeaveRecursiveCall();
    return out;
}

PyObject* walker_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (!one_arg("walker", nargsf, kwnames)) return nullptr;
    return walk(fields(self)[0], args[0]);
}

PyObject* walker_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_fixed_callables(type, args, kwargs, "walker", 1, walker_call);
}

// ---------------------------------------------------------------------------
// side_effect: fields [func]
// ---------------------------------------------------------------------------

PyObject* side_effect_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) return call_at_least("side_effect", 1, nargs);
    // Hold the first argument: func may drop the caller's last other reference
    // only if the caller lent it to us borrowed from a container it mutates.
    PyObject* first = Py_NewRef(args[0]);
    PyObject* r = vcall(fields(self)[0], args, nargsf, kwnames);
    if (!r) {
        Py_DECREF(first);
        return nullptr;
    }
    Py_DECREF(r);
    return first;
}

PyObject* side_effect_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_fixed_callables(type, args, kwargs, "side_effect", 1, side_effect_call);
}

// ---------------------------------------------------------------------------
// handle: fields [func, exc_types, handler]
// try: return func(*a, **kw)  except exc_types as e: return handler(e)
// The handler runs with e as the *handled* exception (sys.exception()), so an
// exception it raises is chained to e via __context__, as in an except block.
// ---------------------------------------------------------------------------

PyObject* handle_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject** f = fields(self);
    PyObject* r = vcall(f[0], args, nargsf, kwnames);
    if (r) return r;
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS: PyErr_GetRaisedException is 3.12+
    PyObject* exc = PyErr_GetRaisedException();
    if (!exc) return nullptr;
    int matches = PyErr_GivenExceptionMatches(exc, f[1]);
    if (!matches) {
        PyErr_SetRaisedException(exc);
        return nullptr;
    }
#else
    PyObject *etype, *evalue, *etb;
    PyErr_Fetch(&etype, &evalue, &etb);
    if (!etype) return nullptr;
    if (!PyErr_GivenExceptionMatches(etype, f[1])) {
        PyErr_Restore(etype, evalue, etb);
        return nullptr;
    }
    PyErr_NormalizeException(&etype, &evalue, &etb);
    if (etb) PyException_SetTraceback(evalue, etb);
    PyObject* exc = evalue;
    Py_XDECREF(etype);
    Py_XDECREF(etb);
    if (!exc) return nullptr;
#endif
    PyObject* previous = PyErr_GetHandledException();  // new ref or NULL
    PyErr_SetHandledException(exc);
    r = call_one(f[2], exc);
    PyErr_SetHandledException(previous ? previous : Py_None);
    Py_XDECREF(previous);
    Py_DECREF(exc);
    return r;
}

bool is_exception_class(PyObject* o) { return PyType_Check(o) && PyType_IsSubtype((PyTypeObject*)o, (PyTypeObject*)PyExc_BaseException); }

PyObject* handle_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (!ctor_no_kwargs("handle", kwargs) || !ctor_exactly("handle", args, 3)) return nullptr;
    PyObject* func = PyTuple_GET_ITEM(args, 0);
    PyObject* exc_types = PyTuple_GET_ITEM(args, 1);
    PyObject* handler = PyTuple_GET_ITEM(args, 2);
    if (!check_callable("handle", 1, func)) return nullptr;
    bool ok = is_exception_class(exc_types);
    if (!ok && PyTuple_Check(exc_types)) {
        ok = true;
        for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(exc_types); ++i)
            ok = is_exception_class(PyTuple_GET_ITEM(exc_types, i));
    }
    if (!ok) {
        PyObject* tn = type_name(exc_types);
        if (tn) {
            PyErr_Format(PyExc_TypeError,
                         "handle() argument 2 must be an exception class or a tuple of exception classes, not %U", tn);
            Py_DECREF(tn);
        }
        return nullptr;
    }
    if (!check_callable("handle", 3, handler)) return nullptr;
    PyObject* self = comb_alloc(type, 3, handle_call);
    if (!self) return nullptr;
    set_field(self, 0, func);
    set_field(self, 1, exc_types);
    set_field(self, 2, handler);
    return self;
}

PyGetSetDef handle_getset[] = {
    FIELD("func", 0, "the guarded callable"),
    FIELD("exc_types", 1, "the exception class or tuple of classes caught"),
    FIELD("handler", 2, "called with the caught exception; its result is returned"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// apply_with: fields [func, transform]
// apply_with(f, t)(*a, **kw) == f(*map(t, a), **{k: t(v) for k, v in kw.items()})
// ---------------------------------------------------------------------------

PyObject* apply_with_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    PyObject** f = fields(self);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + kwcount(kwnames);
    ArgBuffer buf(total);
    if (!buf.ok()) return nullptr;
    PyObject** stack = buf.args();
    Py_ssize_t done = 0;
    PyObject* r = nullptr;
    for (; done < total; ++done) {
        stack[done] = call_one(f[1], args[done]);
        if (!stack[done]) goto out;
    }
    r = vcall(f[0], stack, static_cast<size_t>(nargs) | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
out:
    for (Py_ssize_t i = 0; i < done; ++i) Py_DECREF(stack[i]);
    return r;
}

PyObject* apply_with_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    return new_fixed_callables(type, args, kwargs, "apply_with", 2, apply_with_call);
}

PyGetSetDef apply_with_getset[] = {
    FIELD("func", 0, "the callable finally called"),
    FIELD("transform", 1, "applied to every argument (positional and keyword values)"),
    GETSET_END,
};

// ---------------------------------------------------------------------------
// module-level functions: identity, first_arg, is_none
// ---------------------------------------------------------------------------

PyObject* identity(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    if (kwcount(kwnames)) return call_no_kwargs("identity");
    if (nargs != 1) return call_exactly_one("identity", nargs);
    return Py_NewRef(args[0]);
}

PyObject* first_arg(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject*) {
    if (nargs < 1) return call_at_least("first_arg", 1, nargs);
    return Py_NewRef(args[0]);
}

PyObject* is_none(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    if (kwcount(kwnames)) return call_no_kwargs("is_none");
    if (nargs != 1) return call_exactly_one("is_none", nargs);
    return Py_NewRef(args[0] == Py_None ? Py_True : Py_False);
}

template <typename F>
PyCFunction as_cfunction(F f) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}

PyMethodDef module_functions[] = {
    {"identity", as_cfunction(identity), METH_FASTCALL | METH_KEYWORDS,
     "identity(x, /)\n--\n\nReturn x unchanged."},
    {"first_arg", as_cfunction(first_arg), METH_FASTCALL | METH_KEYWORDS,
     "first_arg(*args, **kwargs)\n--\n\nReturn the first positional argument; keywords are ignored."},
    {"is_none", as_cfunction(is_none), METH_FASTCALL | METH_KEYWORDS,
     "is_none(x, /)\n--\n\nReturn x is None."},
    {nullptr, nullptr, 0, nullptr},
};

// ---------------------------------------------------------------------------
// type specs
// ---------------------------------------------------------------------------

constexpr unsigned int kFlags =
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE;

#define COMBINATOR_TYPE(ident, doc, newf, reprf, getset)                                          \
    PyType_Slot ident##_slots[] = {                                                               \
        {Py_tp_new, reinterpret_cast<void*>(newf)},                                               \
        {Py_tp_repr, reinterpret_cast<void*>(reprf)},                                             \
        {Py_tp_getset, reinterpret_cast<void*>(getset)},                                          \
        {Py_tp_doc, const_cast<char*>(doc)},                                                      \
        {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},                                 \
        {Py_tp_traverse, reinterpret_cast<void*>(comb_traverse)},                                 \
        {Py_tp_clear, reinterpret_cast<void*>(comb_clear)},                                       \
        {Py_tp_dealloc, reinterpret_cast<void*>(comb_dealloc)},                                   \
        {Py_tp_members, reinterpret_cast<void*>(comb_members)},                                   \
        {Py_tp_methods, reinterpret_cast<void*>(comb_methods)},                                   \
        {0, nullptr},                                                                             \
    };                                                                                            \
    PyType_Spec ident##_spec = {"retracesoftware.functional._functional." #ident,                \
                                static_cast<int>(sizeof(Combinator)), static_cast<int>(sizeof(PyObject*)), \
                                kFlags, ident##_slots};

COMBINATOR_TYPE(compose, "compose(*functions)\n--\n\ncompose(f, g, h)(*a, **kw) == f(g(h(*a, **kw)))",
                compose_new, repr_all_fields, compose_getset)
COMBINATOR_TYPE(sequence, "sequence(*functions)\n--\n\nsequence(f, g, h)(*a, **kw) == h(g(f(*a, **kw)))",
                sequence_new, repr_all_fields, compose_getset)
COMBINATOR_TYPE(partial, "partial(func, /, *args, **keywords)\n--\n\nBind leading positionals and keywords.",
                partial_new, partial_repr, partial_getset)
COMBINATOR_TYPE(constantly, "constantly(value)\n--\n\nA callable returning value whatever it is called with.",
                constantly_new, repr_all_fields, constantly_getset)
COMBINATOR_TYPE(repeatedly, "repeatedly(func)\n--\n\nA callable returning func(), ignoring its arguments.",
                repeatedly_new, repr_all_fields, func_getset)
COMBINATOR_TYPE(if_then_else,
                "if_then_else(condition, then, otherwise)\n--\n\n"
                "then(*a, **kw) if condition(*a, **kw) else otherwise(*a, **kw)",
                if_then_else_new, repr_all_fields, if_then_else_getset)
COMBINATOR_TYPE(dispatch,
                "dispatch(cases, default)\n--\n\n"
                "Call the function of the first (predicate, function) case whose predicate is true, else default.",
                dispatch_new, dispatch_repr, dispatch_getset)
COMBINATOR_TYPE(memoize_one_arg, "memoize_one_arg(func)\n--\n\nCache func(x) per hashable x (exceptions are not cached).",
                memoize_new, memoize_repr, memoize_getset)
COMBINATOR_TYPE(nth_arg, "nth_arg(n)\n--\n\nA callable returning its n-th positional argument.", nth_arg_new,
                repr_all_fields, nth_arg_getset)
COMBINATOR_TYPE(isinstance_of, "isinstance_of(cls)\n--\n\nPredicate: isinstance(x, cls).", isinstance_of_new,
                repr_all_fields, isinstance_of_getset)
COMBINATOR_TYPE(not_, "not_(predicate)\n--\n\nPredicate: not predicate(*a, **kw).", not_new, repr_all_fields,
                not_getset)
COMBINATOR_TYPE(and_, "and_(*predicates)\n--\n\nPredicate: all predicates true (short-circuits).", and_new,
                repr_all_fields, predicates_getset)
COMBINATOR_TYPE(or_, "or_(*predicates)\n--\n\nPredicate: any predicate true (short-circuits).", or_new,
                repr_all_fields, predicates_getset)
COMBINATOR_TYPE(walker, "walker(func)\n--\n\nApply func to every leaf of nested tuples/lists/dicts.", walker_new,
                repr_all_fields, func_getset)
COMBINATOR_TYPE(side_effect, "side_effect(func)\n--\n\nCall func(*a, **kw) for its effect; return a[0].",
                side_effect_new, repr_all_fields, func_getset)
COMBINATOR_TYPE(handle,
                "handle(func, exc_types, handler)\n--\n\n"
                "func(*a, **kw), or handler(exc) if it raises one of exc_types.",
                handle_new, repr_all_fields, handle_getset)
COMBINATOR_TYPE(apply_with,
                "apply_with(func, transform)\n--\n\nfunc called with transform applied to every argument.",
                apply_with_new, repr_all_fields, apply_with_getset)

struct NamedSpec {
    const char* name;
    PyType_Spec* spec;
};

}  // namespace

PYBIND11_MODULE(_functional, m) {
    namespace py = pybind11;
    m.doc() = "retracesoftware.functional C++ backend (see functional/README.md for the contract)";
    if (PyModule_AddFunctions(m.ptr(), module_functions) < 0) throw py::error_already_set();
    const NamedSpec specs[] = {
        {"compose", &compose_spec},           {"sequence", &sequence_spec},
        {"partial", &partial_spec},           {"constantly", &constantly_spec},
        {"repeatedly", &repeatedly_spec},     {"if_then_else", &if_then_else_spec},
        {"dispatch", &dispatch_spec},         {"memoize_one_arg", &memoize_one_arg_spec},
        {"nth_arg", &nth_arg_spec},           {"isinstance_of", &isinstance_of_spec},
        {"not_", &not__spec},                 {"and_", &and__spec},
        {"or_", &or__spec},                   {"walker", &walker_spec},
        {"side_effect", &side_effect_spec},   {"handle", &handle_spec},
        {"apply_with", &apply_with_spec},
    };
    for (const NamedSpec& s : specs) {
        PyObject* type = PyType_FromSpec(s.spec);
        if (!type) throw py::error_already_set();
        m.add_object(s.name, py::reinterpret_steal<py::object>(type));
    }
}
