// patch_type / unpatch_type: set attributes on any type, including static and
// immutable builtin types, and restore them exactly.
//
// Two routes, chosen per type:
//  * ordinary types (heap types, and static types on 3.11): clear
//    Py_TPFLAGS_IMMUTABLETYPE, call type.__setattr__ (which updates the C
//    slots of dunders in the type and its subclasses and calls
//    PyType_Modified), put the flag back.
//  * PYVERSIONS: 3.12+ "static builtin" types (int, object, _io.FileIO, and
//    datetime.datetime on 3.13...): their dict lives in the interpreter state
//    and tp_dict is NULL, so type.__setattr__ would write a dict nobody reads.
//    We write the real dict (PyType_GetDict) and call PyType_Modified.  Slot
//    dunders cannot be updated on this route (CPython's update_slot is
//    private), so they are refused with a TypeError.
#include <pybind11/pybind11.h>

#include "utils.h"

#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace retrace::utils {

namespace {

#ifndef _Py_TPFLAGS_STATIC_BUILTIN
#define _Py_TPFLAGS_STATIC_BUILTIN (1UL << 1)
#endif

bool is_static_builtin(PyTypeObject* tp) {
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS
    return (tp->tp_flags & _Py_TPFLAGS_STATIC_BUILTIN) != 0;
#else
    (void)tp;
    return false;
#endif
}

// New reference to the dict CPython actually looks attributes up in.
PyObject* type_dict(PyTypeObject* tp) {
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS: PyType_GetDict is 3.12+
    return PyType_GetDict(tp);
#else
    return Py_NewRef(tp->tp_dict);
#endif
}

bool is_dunder(PyObject* name) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    if (n < 5) return false;
    int kind = PyUnicode_KIND(name);
    const void* d = PyUnicode_DATA(name);
    return PyUnicode_READ(kind, d, 0) == '_' && PyUnicode_READ(kind, d, 1) == '_' &&
           PyUnicode_READ(kind, d, n - 1) == '_' && PyUnicode_READ(kind, d, n - 2) == '_';
}

// value == nullptr deletes.  Raises py::error_already_set on failure.
void set_type_attr(PyTypeObject* tp, PyObject* name, PyObject* value) {
    if (is_static_builtin(tp)) {
        if (is_dunder(name)) {
            PyErr_Format(PyExc_TypeError,
                         "patch_type: cannot set %R on static builtin type '%s' on Python 3.12+: CPython "
                         "offers no public way to update its C slots (patch a non-dunder method instead)",
                         name, tp->tp_name);
            throw py::error_already_set();
        }
        PyObject* dict = type_dict(tp);
        if (!dict) throw py::error_already_set();
        int rc = value ? PyDict_SetItem(dict, name, value) : PyDict_DelItem(dict, name);
        Py_DECREF(dict);
        if (rc < 0) throw py::error_already_set();
        PyType_Modified(tp);
        return;
    }
    unsigned long saved = tp->tp_flags;
    tp->tp_flags &= ~Py_TPFLAGS_IMMUTABLETYPE;
    int rc = PyObject_SetAttr(reinterpret_cast<PyObject*>(tp), name, value);
    tp->tp_flags = saved;
    if (rc < 0) throw py::error_already_set();
    PyType_Modified(tp);
}

// New reference to a weakref's target, or nullptr (dead; no error set).
PyObject* weak_target(PyObject* ref) {
#if PY_VERSION_HEX >= 0x030D0000  // PYVERSIONS: PyWeakref_GetObject is deprecated in 3.13
    PyObject* obj = nullptr;
    if (PyWeakref_GetRef(ref, &obj) < 0) PyErr_Clear();
    return obj;
#else
    PyObject* obj = PyWeakref_GetObject(ref);
    return obj == Py_None ? nullptr : Py_NewRef(obj);
#endif
}

// `cls` and its subclasses, transitively, parents before children.
std::vector<py::object> type_and_subclasses(py::handle cls) {
    std::vector<py::object> out{py::reinterpret_borrow<py::object>(cls)};
    for (size_t i = 0; i < out.size(); i++) {
        py::object subs = out[i].attr("__subclasses__")();
        for (py::handle s : subs) {
            bool seen = false;
            for (auto& o : out) seen = seen || o.ptr() == s.ptr();
            if (!seen) out.push_back(py::reinterpret_borrow<py::object>(s));
        }
    }
    return out;
}

bool has_own_new(PyTypeObject* tp) {
    PyObject* dict = type_dict(tp);
    if (!dict) throw py::error_already_set();
    PyObject* name = PyUnicode_InternFromString("__new__");
    int r = name ? PyDict_Contains(dict, name) : -1;
    Py_XDECREF(name);
    Py_DECREF(dict);
    if (r < 0) throw py::error_already_set();
    return r == 1;
}

struct PatchToken {
    py::object cls;
    std::vector<std::pair<py::object, py::object>> saved;  // (name, old value or null handle)
    bool active = true;
    // Setting and then restoring `__new__` does not give a type its C tp_new
    // back: CPython's slot update keeps slot_tp_new for a builtin __new__
    // (typeobject.c update_one_slot: "specific = type->tp_new"), after which
    // every instantiation fails with "T.__new__(S) is not safe" or "object.
    // __new__() takes exactly one argument".  So when `__new__` is patched we
    // keep tp_new of the type and of each subclass (weakly) and put them back.
    std::vector<std::pair<py::object, newfunc>> saved_new;  // (weakref to type, tp_new)

    void snapshot_new() {
        for (auto& t : type_and_subclasses(cls)) {
            PyObject* ref = PyWeakref_NewRef(t.ptr(), nullptr);
            if (!ref) throw py::error_already_set();
            saved_new.emplace_back(py::reinterpret_steal<py::object>(ref),
                                   reinterpret_cast<PyTypeObject*>(t.ptr())->tp_new);
        }
    }

    void restore_new(newfunc patched) {
        std::vector<PyObject*> done;
        for (auto& [ref, fn] : saved_new) {
            PyObject* t = weak_target(ref.ptr());
            if (!t) continue;
            reinterpret_cast<PyTypeObject*>(t)->tp_new = fn;
            PyType_Modified(reinterpret_cast<PyTypeObject*>(t));
            done.push_back(t);
            Py_DECREF(t);  // still alive: in the subclass lists
        }
        // Subclasses created while patched inherit from their base, as
        // PyType_Ready would have made them, unless they define __new__.
        for (auto& s : type_and_subclasses(cls)) {
            auto* st = reinterpret_cast<PyTypeObject*>(s.ptr());
            bool old = false;
            for (PyObject* d : done) old = old || d == s.ptr();
            if (old || st->tp_new != patched || !st->tp_base || has_own_new(st)) continue;
            py::object found = s.attr("__new__");
            if (!PyCFunction_Check(found.ptr())) continue;  // a Python __new__ above: slot_tp_new is right
            st->tp_new = st->tp_base->tp_new;
            PyType_Modified(st);
        }
    }

    void restore() {
        auto* tp = reinterpret_cast<PyTypeObject*>(cls.ptr());
        newfunc patched = tp->tp_new;
        // Reverse order, so a name listed twice ends at its first old value.
        for (auto it = saved.rbegin(); it != saved.rend(); ++it)
            set_type_attr(tp, it->first.ptr(), it->second ? it->second.ptr() : nullptr);
        if (!saved_new.empty()) restore_new(patched);
    }
};

py::object patch_type(py::handle cls, py::handle attrs) {
    if (!PyType_Check(cls.ptr()))
        throw py::type_error("patch_type: cls must be a type, got " + std::string(Py_TYPE(cls.ptr())->tp_name));
    if (!PyDict_Check(attrs.ptr()))
        throw py::type_error("patch_type: attrs must be a dict, got " + std::string(Py_TYPE(attrs.ptr())->tp_name));
    auto* tp = reinterpret_cast<PyTypeObject*>(cls.ptr());
    // Some static types are readied lazily, on the first attribute lookup
    // (e.g. _socket.socket on 3.11: tp_dict is NULL until then).
    if (!(tp->tp_flags & Py_TPFLAGS_READY) && PyType_Ready(tp) < 0) throw py::error_already_set();
    PatchToken token;
    token.cls = py::reinterpret_borrow<py::object>(cls);
    if (!is_static_builtin(tp) && PyDict_GetItemString(attrs.ptr(), "__new__")) token.snapshot_new();
    // Copy the items first: a value's __set_name__ or a slot update must not
    // be able to mutate the dict we iterate.
    py::list items = py::reinterpret_steal<py::list>(PyDict_Items(attrs.ptr()));
    for (py::handle item : items) {
        py::handle name = PyTuple_GET_ITEM(item.ptr(), 0);
        py::handle value = PyTuple_GET_ITEM(item.ptr(), 1);
        if (!PyUnicode_Check(name.ptr())) {
            try {
                token.restore();
            } catch (py::error_already_set&) {
            }
            throw py::type_error("patch_type: attribute names must be str, got " +
                                 std::string(Py_TYPE(name.ptr())->tp_name));
        }
        PyObject* dict = type_dict(tp);
        if (!dict) throw py::error_already_set();
        PyObject* old = PyDict_GetItemWithError(dict, name.ptr());  // borrowed
        py::object old_obj = py::reinterpret_borrow<py::object>(old);
        Py_DECREF(dict);
        if (!old && PyErr_Occurred()) throw py::error_already_set();
        try {
            set_type_attr(tp, name.ptr(), value.ptr());
        } catch (py::error_already_set&) {
            // Undo what was already set; the original error (held by the
            // exception object being rethrown) is the one reported.
            try {
                token.restore();
            } catch (py::error_already_set&) {
            }
            throw;
        }
        token.saved.emplace_back(py::reinterpret_borrow<py::object>(name), std::move(old_obj));
    }
    return py::cast(std::move(token));
}

void unpatch_type(PatchToken& token) {
    if (!token.active) throw py::value_error("unpatch_type: this token was already unpatched");
    token.active = false;
    token.restore();
}

}  // namespace

int init_typepatch(PyObject* module) {
    try {
        py::module_ m = py::reinterpret_borrow<py::module_>(module);
        py::class_<PatchToken>(m, "PatchToken", "Returned by patch_type; pass to unpatch_type to restore.")
            .def_property_readonly("cls", [](const PatchToken& t) { return t.cls; })
            .def_property_readonly("names",
                                   [](const PatchToken& t) {
                                       py::list names;
                                       for (auto& p : t.saved) names.append(p.first);
                                       return py::tuple(names);
                                   })
            .def_property_readonly("active", [](const PatchToken& t) { return t.active; })
            .def("__repr__", [](const PatchToken& t) {
                return "<PatchToken " + std::string(reinterpret_cast<PyTypeObject*>(t.cls.ptr())->tp_name) +
                       (t.active ? " active>" : " restored>");
            });
        m.def("patch_type", &patch_type, py::arg("cls"), py::arg("attrs"),
              "patch_type(cls, attrs: dict) -> PatchToken: set attributes on any type (static/immutable too)");
        m.def("unpatch_type", &unpatch_type, py::arg("token"),
              "unpatch_type(token): restore exactly what patch_type changed (attributes that did not exist are "
              "deleted)");
    } catch (py::error_already_set& e) {
        e.restore();
        return -1;
    }
    return 0;
}

}  // namespace retrace::utils
