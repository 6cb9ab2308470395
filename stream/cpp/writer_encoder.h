// The StreamWriter's encoder: Python values to msgpack with the stream's
// ext types, byte-for-byte the same as stream/_python.py (docs/FORMAT.md).
// Included by writer.cpp only: the writer is one translation unit, so the
// write path inlines across these parts as it did when they were one file.
#pragma once
#include "writer_state.h"

namespace retrace_stream {
namespace {


enum { OK = 0, ERR = -1, UNRECORDABLE = -2 };

inline void put_uint(Out& o, uint64_t u) {
    if (u < 0x80) o.put1(static_cast<uint8_t>(u));
    else if (u < 0x100) { o.put1(0xcc); o.put1(static_cast<uint8_t>(u)); }
    else if (u < 0x10000) { o.put1(0xcd); o.put_be16(static_cast<uint16_t>(u)); }
    else if (u < 0x100000000ull) { o.put1(0xce); o.put_be32(static_cast<uint32_t>(u)); }
    else { o.put1(0xcf); o.put_be64(u); }
}

inline void put_int(Out& o, long long v) {
    if (v >= 0) { put_uint(o, static_cast<uint64_t>(v)); return; }
    if (v >= -32) o.put1(static_cast<uint8_t>(v));
    else if (v >= -128) { o.put1(0xd0); o.put1(static_cast<uint8_t>(v)); }
    else if (v >= -32768) { o.put1(0xd1); o.put_be16(static_cast<uint16_t>(v)); }
    else if (v >= -2147483648LL) { o.put1(0xd2); o.put_be32(static_cast<uint32_t>(v)); }
    else { o.put1(0xd3); o.put_be64(static_cast<uint64_t>(v)); }
}

inline void put_array_header(Out& o, size_t n) {
    if (n < 16) o.put1(0x90 | n);
    else if (n < 0x10000) { o.put1(0xdc); o.put_be16(n); }
    else { o.put1(0xdd); o.put_be32(n); }
}

inline void put_map_header(Out& o, size_t n) {
    if (n < 16) o.put1(0x80 | n);
    else if (n < 0x10000) { o.put1(0xde); o.put_be16(n); }
    else { o.put1(0xdf); o.put_be32(n); }
}

// An index as a fixext of 1/2/4/8 big-endian bytes. Needs 10 bytes reserved.
inline void put_index_ext(Out& o, int8_t code, uint64_t idx) {
    if (idx < 0x100) { o.put1(0xd4); o.put1(code); o.put1(idx); }
    else if (idx < 0x10000) { o.put1(0xd5); o.put1(code); o.put_be16(idx); }
    else if (idx < 0x100000000ull) { o.put1(0xd6); o.put1(code); o.put_be32(idx); }
    else { o.put1(0xd7); o.put1(code); o.put_be64(idx); }
}

bool nomem() { PyErr_NoMemory(); return false; }

inline bool put_raw_ext(Out& o, int8_t code, const char* p, size_t n) {
    if (n > 0xffffffffu) { PyErr_SetString(PyExc_ValueError, "value too large to record"); return false; }
    if (!o.reserve(n + 6)) return nomem();
    uint8_t h[6];
    size_t hl = ext_header(h, n, code);
    o.put(h, hl);
    o.put(p, n);
    return true;
}

bool put_str_bytes(Out& o, const char* p, size_t n) {
    if (n > 0xffffffffu) { PyErr_SetString(PyExc_ValueError, "str too large to record"); return false; }
    if (!o.reserve(n + 5)) return nomem();
    if (n < 32) o.put1(0xa0 | n);
    else if (n < 0x100) { o.put1(0xd9); o.put1(n); }
    else if (n < 0x10000) { o.put1(0xda); o.put_be16(n); }
    else { o.put1(0xdb); o.put_be32(n); }
    o.put(p, n);
    return true;
}

// UTF-8 of a str, with surrogatepass (lone surrogates come from
// os.fsdecode of undecodable file names). `holder` keeps the bytes alive.
const char* utf8_of(PyObject* s, Py_ssize_t* n, PyObject** holder) {
    *holder = nullptr;
    const char* p = PyUnicode_AsUTF8AndSize(s, n);
    if (p) return p;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return nullptr;
    PyErr_Clear();
    *holder = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (!*holder) return nullptr;
    *n = PyBytes_GET_SIZE(*holder);
    return PyBytes_AS_STRING(*holder);
}

int encode(Writer* w, Out& o, PyObject* v, int depth);

// Begin an ext whose data is encoded in place: reserve the largest header.
inline bool ext_begin(Out& o, size_t* mark) {
    if (!o.reserve(6)) return nomem();
    *mark = o.size;
    o.size += 6;
    return true;
}

// Close it: write the real header and slide the data down over the gap.
inline bool ext_end(Out& o, size_t mark, int8_t code) {
    size_t len = o.size - mark - 6;
    if (len > 0xffffffffu) { PyErr_SetString(PyExc_ValueError, "value too large to record"); return false; }
    uint8_t h[6];
    size_t hl = ext_header(h, len, code);
    std::memcpy(o.data + mark, h, hl);
    if (hl != 6) std::memmove(o.data + mark + hl, o.data + mark + 6, len);
    o.size -= 6 - hl;
    return true;
}

int add_path(Writer* w, PyObject* component) {
    if (!component) return ERR;
    int rc = PyList_Append(w->bad_path, component);
    Py_DECREF(component);
    return rc < 0 ? ERR : UNRECORDABLE;
}

int encode_items(Writer* w, Out& o, PyObject* seq, int depth) {
    // list/tuple: items held strongly, size re-checked (a hook may mutate).
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (!o.reserve(5)) return nomem() ? OK : ERR;
    put_array_header(o, n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PySequence_Fast_GET_SIZE(seq) != n) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size while being recorded");
            return ERR;
        }
        PyObject* item = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(item);
        int rc = encode(w, o, item, depth + 1);
        Py_DECREF(item);
        if (rc == UNRECORDABLE) return add_path(w, PyUnicode_FromFormat("[%zd]", i));
        if (rc) return rc;
    }
    return OK;
}

int encode_iterable(Writer* w, Out& o, PyObject* v, Py_ssize_t n, int depth) {
    if (!o.reserve(5)) return nomem() ? OK : ERR;
    put_array_header(o, n);
    PyObject* it = PyObject_GetIter(v);
    if (!it) return ERR;
    Py_ssize_t i = 0;
    PyObject* item;
    while ((item = PyIter_Next(it))) {
        int rc = encode(w, o, item, depth + 1);
        Py_DECREF(item);
        if (rc == UNRECORDABLE) { Py_DECREF(it); return add_path(w, PyUnicode_FromFormat("[%zd]", i)); }
        if (rc) { Py_DECREF(it); return rc; }
        i++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return ERR;
    if (i != n) { PyErr_SetString(PyExc_RuntimeError, "set changed size while being recorded"); return ERR; }
    return OK;
}

int encode_str(Writer* w, Out& o, PyObject* v) {
    Py_ssize_t len = PyUnicode_GET_LENGTH(v);
    if (w->intern && len >= INTERN_MIN && len <= INTERN_MAX) {
        auto& list = w->core.string_list;
        Core::StrSlot& slot = str_slot(w->core, v);
        if (slot.key == v && slot.idx < list.size() && list[slot.idx] == v) {
            if (!o.reserve(10)) return nomem() ? OK : ERR;
            put_index_ext(o, EXT_STR_REF, slot.idx);
            return OK;
        }
        PyObject* idx = PyDict_GetItemWithError(w->strings, v);
        if (idx) {
            if (!o.reserve(10)) return nomem() ? OK : ERR;
            size_t i = static_cast<size_t>(PyLong_AsUnsignedLongLong(idx));
            if (i < list.size() && list[i] == v) slot = {v, i};
            put_index_ext(o, EXT_STR_REF, i);
            return OK;
        }
        if (PyErr_Occurred()) return ERR;
        if (list.size() < INTERN_LIMIT) {
            PyObject* num = PyLong_FromSize_t(list.size());
            if (!num) return ERR;
            int rc = PyDict_SetItem(w->strings, v, num);
            Py_DECREF(num);
            if (rc < 0) return ERR;
            list.push_back(v);  // the dict holds the reference
            slot = {v, list.size() - 1};
            Py_ssize_t n;
            PyObject* holder;
            const char* p = utf8_of(v, &n, &holder);
            if (!p) return ERR;
            bool ok = put_raw_ext(o, EXT_STR_DEF, p, n);
            Py_XDECREF(holder);
            return ok ? OK : ERR;
        }
    }
    Py_ssize_t n;
    PyObject* holder;
    const char* p = utf8_of(v, &n, &holder);
    if (!p) return ERR;
    bool ok = put_str_bytes(o, p, n);
    Py_XDECREF(holder);
    return ok ? OK : ERR;
}

int encode_int(Writer*, Out& o, PyObject* v) {
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (!o.reserve(9)) return nomem() ? OK : ERR;
    if (!overflow) {
        if (x == -1 && PyErr_Occurred()) return ERR;
        put_int(o, x);
        return OK;
    }
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(v);
        if (!(u == static_cast<unsigned long long>(-1) && PyErr_Occurred())) {
            put_uint(o, u);
            return OK;
        }
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return ERR;
        PyErr_Clear();
    }
    PyObject* b = PyObject_CallOneArg(g.bigint_bytes, v);
    if (!b) return ERR;
    if (!PyBytes_Check(b)) { Py_DECREF(b); PyErr_SetString(PyExc_TypeError, "bigint_bytes"); return ERR; }
    bool ok = put_raw_ext(o, EXT_BIGINT, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return ok ? OK : ERR;
}

int encode_slow(Writer* w, Out& o, PyObject* v, int depth);

int encode(Writer* w, Out& o, PyObject* v, int depth) {
    PyTypeObject* t = Py_TYPE(v);
    if (t == &PyUnicode_Type) return encode_str(w, o, v);
    if (t == &PyLong_Type) return encode_int(w, o, v);
    if (t == &PyFloat_Type) {
        if (!o.reserve(9)) return nomem() ? OK : ERR;
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t bits;
        std::memcpy(&bits, &d, 8);
        o.put1(0xcb);
        o.put_be64(bits);
        return OK;
    }
    if (v == Py_None || t == &PyBool_Type) {
        if (!o.reserve(1)) return nomem() ? OK : ERR;
        o.put1(v == Py_None ? 0xc0 : v == Py_True ? 0xc3 : 0xc2);
        return OK;
    }
    if (t == &PyBytes_Type) {
        size_t n = PyBytes_GET_SIZE(v);
        if (n > 0xffffffffu) { PyErr_SetString(PyExc_ValueError, "bytes too large to record"); return ERR; }
        if (!o.reserve(n + 5)) return nomem() ? OK : ERR;
        if (n < 0x100) { o.put1(0xc4); o.put1(n); }
        else if (n < 0x10000) { o.put1(0xc5); o.put_be16(n); }
        else { o.put1(0xc6); o.put_be32(n); }
        o.put(PyBytes_AS_STRING(v), n);
        return OK;
    }
    if (!w->core.bindings.empty()) {
        auto it = w->core.bindings.find(v);
        if (it != w->core.bindings.end()) {
            if (!o.reserve(10)) return nomem() ? OK : ERR;
            put_index_ext(o, EXT_HANDLE, it->second.index);
            return OK;
        }
    }
    return encode_slow(w, o, v, depth);
}

int encode_dict(Writer* w, Out& o, PyObject* v, int depth) {
    Py_ssize_t n = PyDict_GET_SIZE(v);
    if (!o.reserve(5)) return nomem() ? OK : ERR;
    put_map_header(o, n);
    Py_ssize_t pos = 0;
    PyObject *k, *item;
    Py_ssize_t seen = 0;
    while (PyDict_Next(v, &pos, &k, &item)) {
        Py_INCREF(k);
        Py_INCREF(item);
        int rc = encode(w, o, k, depth + 1);
        if (rc == UNRECORDABLE) rc = add_path(w, PyUnicode_FromFormat("<key %R>", k));
        if (!rc) {
            rc = encode(w, o, item, depth + 1);
            if (rc == UNRECORDABLE) rc = add_path(w, PyUnicode_FromFormat("[%R]", k));
        }
        Py_DECREF(k);
        Py_DECREF(item);
        if (rc) return rc;
        seen++;
        if (PyDict_GET_SIZE(v) != n) break;
    }
    if (seen != n || PyDict_GET_SIZE(v) != n) {
        PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
        return ERR;
    }
    return OK;
}

// ext whose data is the encoding of `payload`; `label` names it in paths.
int encode_ext_of(Writer* w, Out& o, int8_t code, PyObject* payload, int depth, PyObject* label) {
    size_t mark;
    if (!ext_begin(o, &mark)) return ERR;
    int rc = encode(w, o, payload, depth + 1);
    if (rc == UNRECORDABLE && label) return add_path(w, PyUnicode_FromFormat("<%S>", label));
    if (rc) return rc;
    return ext_end(o, mark, code) ? OK : ERR;
}

int encode_slow(Writer* w, Out& o, PyObject* v, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "value nested deeper than %d levels", MAX_DEPTH);
        return ERR;
    }
    PyTypeObject* t = Py_TYPE(v);
    if (t == &PyTuple_Type) {
        size_t mark;
        if (!ext_begin(o, &mark)) return ERR;
        int rc = encode_items(w, o, v, depth);
        if (rc) return rc;
        return ext_end(o, mark, EXT_TUPLE) ? OK : ERR;
    }
    if (t == &PyList_Type) return encode_items(w, o, v, depth);
    if (t == &PyDict_Type) return encode_dict(w, o, v, depth);
    if (t == &PySet_Type || t == &PyFrozenSet_Type) {
        size_t mark;
        if (!ext_begin(o, &mark)) return ERR;
        int rc = encode_iterable(w, o, v, PySet_GET_SIZE(v), depth);
        if (rc) return rc;
        return ext_end(o, mark, t == &PySet_Type ? EXT_SET : EXT_FROZENSET) ? OK : ERR;
    }
    PyObject* hook = PyDict_GetItemWithError(w->hooks, reinterpret_cast<PyObject*>(t));
    if (hook) {
        Py_INCREF(hook);
        PyObject* name = PyTuple_GET_ITEM(hook, 0);
        PyObject* state = PyObject_CallOneArg(PyTuple_GET_ITEM(hook, 1), v);
        if (!state) { Py_DECREF(hook); return ERR; }
        size_t mark;
        int rc = ERR;
        if (ext_begin(o, &mark) && o.reserve(1)) {
            put_array_header(o, 2);
            rc = encode(w, o, name, depth + 1);
            if (!rc) {
                rc = encode(w, o, state, depth + 1);
                if (rc == UNRECORDABLE) rc = add_path(w, PyUnicode_FromFormat("<%S>", name));
            }
            if (!rc && !ext_end(o, mark, EXT_HOOK)) rc = ERR;
        } else {
            PyErr_NoMemory();
        }
        Py_DECREF(state);
        Py_DECREF(hook);
        return rc;
    }
    if (PyErr_Occurred()) return ERR;
    PyObject* reduced = PyObject_CallOneArg(g.reduce_value, v);
    if (!reduced) return ERR;
    if (reduced == Py_None) {
        Py_DECREF(reduced);
        Py_XSETREF(w->bad_value, Py_NewRef(v));
        return UNRECORDABLE;
    }
    if (!PyTuple_Check(reduced) || PyTuple_GET_SIZE(reduced) != 2) {
        Py_DECREF(reduced);
        PyErr_SetString(PyExc_TypeError, "reduce_value must return (code, payload) or None");
        return ERR;
    }
    long code = PyLong_AsLong(PyTuple_GET_ITEM(reduced, 0));
    PyObject* payload = PyTuple_GET_ITEM(reduced, 1);
    int rc;
    if (code == -1 && PyErr_Occurred()) rc = ERR;
    else if (code == 0) rc = encode(w, o, payload, depth + 1);
    else {
        PyObject* label = (PyList_Check(payload) && PyList_GET_SIZE(payload) > 0)
                              ? PyList_GET_ITEM(payload, 0) : nullptr;
        rc = encode_ext_of(w, o, static_cast<int8_t>(code), payload, depth, label);
    }
    Py_DECREF(reduced);
    return rc;
}

// Encode one top-level value; an unrecordable value becomes the TypeError.
int encode_top(Writer* w, Out& o, PyObject* v) {
    int rc = encode(w, o, v, 0);
    if (rc == UNRECORDABLE) {
        PyObject* err = PyObject_CallFunctionObjArgs(g.unrecordable, w->bad_value, w->bad_path, nullptr);
        Py_CLEAR(w->bad_value);
        PyList_SetSlice(w->bad_path, 0, PY_SSIZE_T_MAX, nullptr);
        if (err) {
            PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err)), err);
            Py_DECREF(err);
        }
        return ERR;
    }
    if (rc) {
        Py_CLEAR(w->bad_value);
        PyList_SetSlice(w->bad_path, 0, PY_SSIZE_T_MAX, nullptr);
    }
    return rc;
}

}  // namespace
}  // namespace retrace_stream
