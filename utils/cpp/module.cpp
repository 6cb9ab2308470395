// Module plumbing of retracesoftware.utils._utils (pybind11 for the module
// object only; every hot path is raw CPython API in the other files).
#include <pybind11/pybind11.h>

#include "utils.h"

namespace py = pybind11;
using namespace retrace::utils;

PYBIND11_MODULE(_utils, m) {
    m.doc() = "retracesoftware.utils C++ backend (see utils/README.md)";
    PyObject* mod = m.ptr();
    if (init_gates(mod) < 0 || init_gateways(mod) < 0 || init_fingerprint(mod) < 0 || init_typepatch(mod) < 0 ||
        init_identity_hash(mod) < 0 || init_reference_index(mod) < 0 ||
        init_stack(mod) < 0 || init_type_gateways(mod) < 0 ||
        init_record_call(mod) < 0 || init_replay_call(mod) < 0 ||
        init_ticker(mod) < 0)
        throw py::error_already_set();
}
