// index_namespace: one module's part of the installer's reference index
// (install/installer.py `Installer._reference_index`): where a function the
// install replaces may have been copied to. The same walk as the Python
// backend's (utils/_python.py), which is the reference; in C++ because it is
// the bulk of a record's or replay's start (one pass over every loaded
// module's globals and classes: ~3 ms in Python, ~0.5 ms here).
//
// index_namespace(index, shared, skip, module, name, namespace):
//   index      dict id(value) -> list of (kind, owner, key, value)
//   shared     dict id -> list whose lists `index` shares with a cache (a
//              shared list is copied before it grows), or None
//   skip       a set of exact types whose values are left out
//   module     the module (owner of its globals)
//   name       its name: functions and classes defined in it are looked into
//   namespace  its __dict__
// kinds: 0 module global, 1 class attribute, 2 default, 3 keyword default,
// 4 closure cell (builtins only), 5 a staticmethod's function.
#include "utils.h"

namespace retrace::utils {

namespace {

enum Kind { IN_MODULE = 0, IN_CLASS, IN_DEFAULTS, IN_KWDEFAULTS, IN_CELL, IN_STATICMETHOD };

struct Walk {
    PyObject* index;
    PyObject* shared;  // nullptr when None or empty
    PyObject* skip;
};

// add(kind, owner, key, value); 0 or -1 with an exception set.
int add(Walk& w, int kind, PyObject* owner, PyObject* key, PyObject* value) {
    int skipped = PySet_Contains(w.skip, reinterpret_cast<PyObject*>(Py_TYPE(value)));
    if (skipped) return skipped < 0 ? -1 : 0;
    PyObject* ident = PyLong_FromVoidPtr(value);
    if (!ident) return -1;
    PyObject* k = PyLong_FromLong(kind);  // small ints: cached
    PyObject* entry = k ? PyTuple_Pack(4, k, owner, key, value) : nullptr;
    Py_XDECREF(k);
    if (!entry) { Py_DECREF(ident); return -1; }
    int rc = 0;
    PyObject* places = PyDict_GetItemWithError(w.index, ident);  // borrowed
    if (!places) {
        if (PyErr_Occurred()) {
            rc = -1;
        } else {
            PyObject* list = PyList_New(1);
            if (!list) {
                rc = -1;
            } else {
                PyList_SET_ITEM(list, 0, Py_NewRef(entry));
                rc = PyDict_SetItem(w.index, ident, list);
                Py_DECREF(list);
            }
        }
    } else {
        PyObject* theirs = w.shared ? PyDict_GetItemWithError(w.shared, ident) : nullptr;
        if (!theirs && PyErr_Occurred()) {
            rc = -1;
        } else if (theirs == places) {
            // the cache's list: a copy grows, never the cached one
            Py_ssize_t n = PyList_GET_SIZE(places);
            PyObject* copy = PyList_GetSlice(places, 0, n);
            if (!copy || PyList_Append(copy, entry) < 0 || PyDict_SetItem(w.index, ident, copy) < 0) rc = -1;
            Py_XDECREF(copy);
        } else {
            rc = PyList_Append(places, entry);
        }
    }
    Py_DECREF(entry);
    Py_DECREF(ident);
    return rc;
}

int add_cells(Walk& w, PyObject* fn) {
    PyObject* closure = PyFunction_GET_CLOSURE(fn);
    if (!closure) return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(closure); i++) {
        PyObject* cell = PyTuple_GET_ITEM(closure, i);
        if (!PyCell_Check(cell)) continue;
        PyObject* v = PyCell_GET(cell);
        if (v && Py_TYPE(v) == &PyCFunction_Type && add(w, IN_CELL, cell, Py_None, v) < 0) return -1;
    }
    return 0;
}

int add_defaults(Walk& w, PyObject* fn) {
    PyObject* defaults = PyFunction_GET_DEFAULTS(fn);
    if (defaults && PyTuple_Check(defaults)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(defaults); i++) {
            PyObject* pos = PyLong_FromSsize_t(i);
            if (!pos) return -1;
            int rc = add(w, IN_DEFAULTS, fn, pos, PyTuple_GET_ITEM(defaults, i));
            Py_DECREF(pos);
            if (rc < 0) return -1;
        }
    }
    PyObject* kwdefaults = PyFunction_GET_KW_DEFAULTS(fn);
    if (kwdefaults && PyDict_Check(kwdefaults)) {
        PyObject* items = PyDict_Items(kwdefaults);
        if (!items) return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
            PyObject* kv = PyList_GET_ITEM(items, i);
            if (add(w, IN_KWDEFAULTS, fn, PyTuple_GET_ITEM(kv, 0), PyTuple_GET_ITEM(kv, 1)) < 0) {
                Py_DECREF(items);
                return -1;
            }
        }
        Py_DECREF(items);
    }
    return add_cells(w, fn);
}

bool has_extras(PyObject* fn) {
    // `fn.__defaults__ or fn.__kwdefaults__ or fn.__closure__` (empty ones are false)
    PyObject* d = PyFunction_GET_DEFAULTS(fn);
    PyObject* kw = PyFunction_GET_KW_DEFAULTS(fn);
    PyObject* c = PyFunction_GET_CLOSURE(fn);
    return (d && PyObject_IsTrue(d) > 0) || (kw && PyObject_IsTrue(kw) > 0) || (c && PyObject_IsTrue(c) > 0);
}

// `getattr(obj, name, None)`: a new reference, or nullptr (no error) when
// absent; -1 in *err on another error.
PyObject* optional_attr(PyObject* obj, const char* name, int* err) {
    PyObject* v = PyObject_GetAttrString(obj, name);
    if (!v) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) PyErr_Clear();
        else *err = -1;
    }
    return v;
}

int index_class_attr(Walk& w, PyObject* cls, PyObject* ckey, PyObject* cvalue) {
    if (Py_TYPE(cvalue) == &PyFunction_Type) return has_extras(cvalue) ? add_defaults(w, cvalue) : 0;
    if (add(w, IN_CLASS, cls, ckey, cvalue) < 0) return -1;
    if (Py_TYPE(cvalue) != &PyStaticMethod_Type) return 0;
    PyObject* fn = PyObject_GetAttrString(cvalue, "__func__");
    if (!fn) return -1;
    int rc = add(w, IN_STATICMETHOD, cls, ckey, fn);
    Py_DECREF(fn);
    return rc;
}

int index_value(Walk& w, PyObject* module, PyObject* mname, PyObject* key, PyObject* value);

// Every item of *d* (a module's globals, a heap class's own dict) through
// *each*, without copying the items first: a snapshot was a tuple per item,
// most of the walk. What each item runs can only in odd cases change the
// dict (a metaclass `__module__` property, an `__eq__` of a `__module__`
// value); then the walk goes over a snapshot again from the start (an entry
// added twice is harmless: a replacement checks the place still holds the
// original).
template <typename Each>
int walk_items(PyObject* d, Each each) {
    Py_ssize_t size = PyDict_GET_SIZE(d);
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v)) {
        Py_INCREF(k);
        Py_INCREF(v);
        int rc = each(k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0) return -1;
        if (PyDict_GET_SIZE(d) != size) {
            PyObject* items = PyDict_Items(d);
            if (!items) return -1;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
                PyObject* kv = PyList_GET_ITEM(items, i);
                if (each(PyTuple_GET_ITEM(kv, 0), PyTuple_GET_ITEM(kv, 1)) < 0) {
                    Py_DECREF(items);
                    return -1;
                }
            }
            Py_DECREF(items);
            return 0;
        }
    }
    return 0;
}

int index_class(Walk& w, PyObject* cls) {
    // A heap type's own dict (what `cls.__dict__` shows through its proxy).
    PyObject* d = reinterpret_cast<PyTypeObject*>(cls)->tp_dict;
    if (!d || !PyDict_Check(d)) return 0;
    Py_INCREF(d);
    int rc = walk_items(d, [&](PyObject* ckey, PyObject* cvalue) { return index_class_attr(w, cls, ckey, cvalue); });
    Py_DECREF(d);
    return rc;
}

int index_value(Walk& w, PyObject* module, PyObject* mname, PyObject* key, PyObject* value) {
    PyTypeObject* tv = Py_TYPE(value);
    int skipped = PySet_Contains(w.skip, reinterpret_cast<PyObject*>(tv));
    if (skipped) return skipped < 0 ? -1 : 0;
    if (add(w, IN_MODULE, module, key, value) < 0) return -1;
    if (tv == &PyFunction_Type) {
        PyObject* fmod = PyFunction_GetModule(value);  // borrowed: `value.__module__`
        int same = fmod ? PyObject_RichCompareBool(fmod, mname, Py_EQ) : 0;
        if (same < 0) return -1;
        if (same) {
            if (has_extras(value)) return add_defaults(w, value);
            return 0;
        }
        PyObject* closure = PyFunction_GET_CLOSURE(value);
        if (closure && PyObject_IsTrue(closure) > 0) {
            int err = 0;
            PyObject* wrapped = optional_attr(value, "__wrapped__", &err);
            if (err) return -1;
            bool wrapping = wrapped && wrapped != Py_None;
            Py_XDECREF(wrapped);
            if (wrapping) return add_cells(w, value);   // functools.wraps gave it the wrapped one's module
        }
        return 0;
    }
    if (PyType_IsSubtype(tv, &PyType_Type)) {
        PyObject* cmod = PyObject_GetAttrString(value, "__module__");
        if (!cmod) return -1;
        int same = PyObject_RichCompareBool(cmod, mname, Py_EQ);
        Py_DECREF(cmod);
        if (same < 0) return -1;
        if (same && PyType_HasFeature(reinterpret_cast<PyTypeObject*>(value), Py_TPFLAGS_HEAPTYPE))
            return index_class(w, value);
    }
    return 0;
}

PyObject* index_namespace(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "index_namespace(index, shared, skip, module, name, namespace) takes 6 arguments");
        return nullptr;
    }
    PyObject *index = args[0], *shared = args[1], *skip = args[2], *module = args[3], *mname = args[4],
             *ns = args[5];
    if (!PyDict_Check(index) || (shared != Py_None && !PyDict_Check(shared)) || !PyAnySet_Check(skip) ||
        !PyDict_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "index_namespace: index, shared and namespace must be dicts (shared may be "
                                         "None), skip a set");
        return nullptr;
    }
    Walk w{index, (shared == Py_None || PyDict_GET_SIZE(shared) == 0) ? nullptr : shared, skip};
    if (walk_items(ns, [&](PyObject* key, PyObject* value) { return index_value(w, module, mname, key, value); }) < 0)
        return nullptr;
    Py_RETURN_NONE;
}

PyMethodDef functions[] = {
    {"index_namespace", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(index_namespace)),
     METH_FASTCALL,
     "index_namespace(index, shared, skip, module, name, namespace): add one module's references to the "
     "installer's reference index (see utils/README.md)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

int init_reference_index(PyObject* module) { return PyModule_AddFunctions(module, functions); }

}  // namespace retrace::utils
