// Placeholder translation unit; replaced by the functional layer's real sources.
#include <pybind11/pybind11.h>
PYBIND11_MODULE(_functional, m) { m.doc() = "retracesoftware.functional C++ backend"; }
