// Shared declarations of the _utils extension (retracesoftware.utils C++ backend).
//
// GIL rules: every function here is called with the GIL held.  The per-thread
// phase storage is thread_local, so reads/writes need no lock; the slot
// allocator of Gate objects is only touched with the GIL held (Gate
// creation/destruction).  Free-threaded (no-GIL) builds are not supported.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstddef>
#include <cstdint>

// PYVERSIONS: 3.12 made the PyMemberDef constants public (Py_T_*, Py_READONLY).
#if PY_VERSION_HEX >= 0x030C0000
#define RETRACE_T_OBJECT_EX Py_T_OBJECT_EX
#define RETRACE_T_PYSSIZET Py_T_PYSSIZET
#define RETRACE_T_DOUBLE Py_T_DOUBLE
#define RETRACE_READONLY Py_READONLY
#else
#include <structmember.h>
#define RETRACE_T_OBJECT_EX T_OBJECT_EX
#define RETRACE_T_PYSSIZET T_PYSSIZET
#define RETRACE_T_DOUBLE T_DOUBLE
#define RETRACE_READONLY READONLY
#endif

namespace retrace::utils {

enum Phase : int { DISABLED = 0, INTERNAL = 1, EXTERNAL = 2 };

// Thread-locals read on every recorded call: the initial-exec TLS model
// (an offset from the thread pointer) instead of the default for shared
// objects, a __tls_get_addr call per access. Only small, trivially
// initialised variables (static TLS has a little room for dlopen'ed
// modules; ours take a few dozen bytes).
#if defined(__GNUC__) && defined(__ELF__)
#define RETRACE_TLS_IE __attribute__((tls_model("initial-exec")))
#else
#define RETRACE_TLS_IE
#endif

// ---- gate.cpp
struct GateObject {
    PyObject_HEAD
    uint32_t slot;
    uint64_t generation;
    PyObject* weakreflist;
};
extern PyTypeObject* GateType;
// This thread's phase cells, one per live Gate slot: (generation << 2) | phase.
struct GateCells {
    uint64_t* cells;
    size_t n;
};
extern thread_local GateCells tl_gate_cells RETRACE_TLS_IE;
void grow_gate_cells(uint32_t slot);

inline int gate_get(GateObject* gate) noexcept {
    uint32_t slot = gate->slot;
    GateCells& c = tl_gate_cells;
    if (slot < c.n) {
        uint64_t cell = c.cells[slot];
        if ((cell >> 2) == gate->generation) return static_cast<int>(cell & 3);
    }
    return DISABLED;
}

inline void gate_set(GateObject* gate, int phase) {   // phase already validated
    uint32_t slot = gate->slot;
    if (slot >= tl_gate_cells.n) [[unlikely]] grow_gate_cells(slot);
    tl_gate_cells.cells[slot] = (gate->generation << 2) | static_cast<uint64_t>(phase);
}
int init_gates(PyObject* module);             // Gate, _GateUsing, _C_API
// PyType_FromSpec, kept in *out for the life of the process, added to the
// module as `name`. 0 / -1 with an exception set.
int add_type(PyObject* module, PyType_Spec* spec, PyTypeObject** out, const char* name);

// ---- gateways.cpp
int init_gateways(PyObject* module);          // RecordGateway, ReplayGateway

// ---- fingerprint.cpp
int init_fingerprint(PyObject* module);
// fingerprint(*args, **kwargs) on a vectorcall argument array (new reference).
PyObject* fingerprint_vector(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames);

// ---- record_call.cpp
int init_record_call(PyObject* module);       // RecordCallGateway, flush_pending_calls

// ---- replay_call.cpp
int init_replay_call(PyObject* module);       // ReplayCallGateway, TurnState

// ---- typepatch.cpp
int init_typepatch(PyObject* module);

// ---- identity_hash.cpp
int init_identity_hash(PyObject* module);

// ---- reference_index.cpp
int init_reference_index(PyObject* module);

// ---- type_gateways.cpp
int init_type_gateways(PyObject* module);      // MethodGateway, NewGateway

// ---- ticker.cpp
int init_ticker(PyObject* module);             // ScheduleTracer, Ticker (--schedule)

// ---- stack.cpp
int init_stack(PyObject* module);

// Exception save/restore that works on 3.11 (type, value, tb) and 3.12+
// (single exception object).  Returns a normalised exception instance with
// its traceback attached (new reference), clearing the error indicator.
PyObject* fetch_exception() noexcept;
// Steals `exc`.
void restore_exception(PyObject* exc) noexcept;
// After a call `r` (a new reference, or null when it raised) made while
// `exc` was pending: raised -> its exception is set, chained to `exc` (what
// `except: handler(exc); raise` does in Python); else `exc` is set again.
// Steals `exc` and `r`.
inline void restore_exception_after(PyObject* r, PyObject* exc) noexcept {
    if (!r) {
        PyObject* newexc = fetch_exception();
        PyException_SetContext(newexc, exc);  // steals exc
        restore_exception(newexc);
    } else {
        Py_DECREF(r);
        restore_exception(exc);
    }
}

}  // namespace retrace::utils
