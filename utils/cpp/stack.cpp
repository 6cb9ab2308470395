// capture_stack / StackDelta: the current Python stack as
// (filename, lineno, funcname) tuples, outermost first, for divergence
// reports.  Uses only public frame accessors (PyFrame_GetBack, _GetCode,
// _GetLineNumber), valid on 3.11-3.13.
#include <pybind11/pybind11.h>

#include "utils.h"

namespace py = pybind11;

namespace retrace::utils {

namespace {

// New reference to a tuple of (filename, lineno, name), outermost first,
// dropping the `skip` innermost frames.
py::tuple capture(Py_ssize_t skip) {
    if (skip < 0) throw py::value_error("capture_stack: skip must be >= 0");
    py::list inner_first;
    PyFrameObject* frame = PyEval_GetFrame();  // borrowed
    Py_XINCREF(frame);
    Py_ssize_t index = 0;
    while (frame) {
        if (index++ >= skip) {
            PyCodeObject* code = PyFrame_GetCode(frame);  // new ref
            int line = PyFrame_GetLineNumber(frame);
            py::tuple entry = py::make_tuple(py::reinterpret_borrow<py::object>(code->co_filename), line,
                                             py::reinterpret_borrow<py::object>(code->co_name));
            Py_DECREF(code);
            inner_first.append(entry);
        }
        PyFrameObject* back = PyFrame_GetBack(frame);  // new ref
        Py_DECREF(frame);
        frame = back;
    }
    Py_ssize_t n = static_cast<Py_ssize_t>(inner_first.size());
    py::tuple out(n);
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* item = PyList_GET_ITEM(inner_first.ptr(), n - 1 - i);
        PyTuple_SET_ITEM(out.ptr(), i, Py_NewRef(item));
    }
    return out;
}

struct StackDelta {
    py::tuple previous = py::tuple(0);

    // (common, new_frames): the number of outermost frames shared with the
    // previous capture, and the frames after them.
    py::tuple delta(Py_ssize_t skip) {
        py::tuple now = capture(skip);
        Py_ssize_t n = PyTuple_GET_SIZE(now.ptr()), m = PyTuple_GET_SIZE(previous.ptr());
        Py_ssize_t common = 0;
        while (common < n && common < m) {
            int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(now.ptr(), common),
                                              PyTuple_GET_ITEM(previous.ptr(), common), Py_EQ);
            if (eq < 0) throw py::error_already_set();
            if (!eq) break;
            ++common;
        }
        py::tuple fresh = py::reinterpret_steal<py::tuple>(PyTuple_GetSlice(now.ptr(), common, n));
        if (!fresh) throw py::error_already_set();
        previous = now;
        return py::make_tuple(common, fresh);
    }
};

}  // namespace

int init_stack(PyObject* module) {
    try {
        py::module_ m = py::reinterpret_borrow<py::module_>(module);
        // skip counts from the caller of capture_stack (skip=0: the caller is
        // the last entry).  PyEval_GetFrame already excludes this C function.
        m.def("capture_stack", &capture, py::arg("skip") = 0,
              "capture_stack(skip=0) -> tuple[(filename, lineno, funcname), ...], outermost first");
        py::class_<StackDelta>(m, "StackDelta", "Stack captures reported as a delta from the previous one.")
            .def(py::init<>())
            .def("capture",
                 [](StackDelta& self, Py_ssize_t skip) { return self.delta(skip); },
                 py::arg("skip") = 0,
                 "capture(skip=0) -> (common, new_frames): frames shared (outermost) with the previous capture, "
                 "and the frames after them")
            .def_property_readonly("previous", [](const StackDelta& self) { return self.previous; })
            .def("reset", [](StackDelta& self) { self.previous = py::tuple(0); });
    } catch (py::error_already_set& e) {
        e.restore();
        return -1;
    }
    return 0;
}

}  // namespace retrace::utils
