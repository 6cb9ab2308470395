// retracesoftware.stream._stream: module plumbing (pybind11) + CRC-32.
#include <pybind11/pybind11.h>

#include "common.h"

namespace retrace_stream {

ModuleState g;

PyObject* make_writer_type(PyObject* module);
PyObject* make_reader_type(PyObject* module);

namespace {
struct CrcTable {
    uint32_t t[8][256];
    CrcTable() {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
            for (int s = 1; s < 8; s++) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
};
const CrcTable crc_table;
}  // namespace

// zlib-compatible CRC-32 (slice-by-8; little-endian hosts).
uint32_t crc32(const void* data, size_t n, uint32_t crc) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    const auto& t = crc_table.t;
    crc = ~crc;
    while (n >= 8) {
        uint32_t a, b;
        std::memcpy(&a, p, 4);
        std::memcpy(&b, p + 4, 4);
        a ^= crc;
        crc = t[7][a & 0xff] ^ t[6][(a >> 8) & 0xff] ^ t[5][(a >> 16) & 0xff] ^ t[4][a >> 24] ^
              t[3][b & 0xff] ^ t[2][(b >> 8) & 0xff] ^ t[1][(b >> 16) & 0xff] ^ t[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

}  // namespace retrace_stream

namespace py = pybind11;

PYBIND11_MODULE(_stream, m) {
    using namespace retrace_stream;
    m.doc() = "retracesoftware.stream C++ backend (see stream/README.md)";
    py::module_ common = py::module_::import("retracesoftware.stream._common");
    py::module_ errors = py::module_::import("retracesoftware.utils.errors");
    auto keep = [&](const char* name, py::object o) {
        m.attr(name) = o;  // the module owns the reference for its lifetime
        return o.ptr();
    };
    g.reduce_value = keep("_reduce_value", common.attr("reduce_value"));
    g.rebuild_value = keep("_rebuild_value", common.attr("rebuild_value"));
    g.unrecordable = keep("_unrecordable", common.attr("unrecordable"));
    g.format_error = keep("_format_error", common.attr("format_error"));
    g.forked_error = keep("_forked_error", common.attr("forked_error"));
    g.track_writer = keep("_track_writer", common.attr("track_writer"));
    g.bigint_bytes = keep("_bigint_bytes", common.attr("bigint_bytes"));
    g.type_name = keep("_type_name", common.attr("type_name"));
    g.position = keep("StreamPosition", common.attr("StreamPosition"));
    m.attr("UnknownRecordedException") = common.attr("UnknownRecordedException");
    g.recording_error = keep("RecordingError", errors.attr("RecordingError"));
    g.recording_format_error = keep("RecordingFormatError", errors.attr("RecordingFormatError"));
    PyObject* w = make_writer_type(m.ptr());
    if (!w) throw py::error_already_set();
    m.attr("StreamWriter") = py::reinterpret_steal<py::object>(w);
    m.def("thread_ids_changed", []() { g.thread_epoch++; },
          "A thread's logical id was given, changed or taken: writers made with cache_thread_id=True ask "
          "thread_id() again (called with the GIL held).");
    PyObject* r = make_reader_type(m.ptr());
    if (!r) throw py::error_already_set();
    m.attr("StreamReader") = py::reinterpret_steal<py::object>(r);
}
