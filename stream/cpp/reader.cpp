// StreamReader: frames → events → Python values. Every malformed input ends
// in a RecordingFormatError (built by _common.format_error, so both backends
// word it the same); nothing here trusts a length before checking it against
// the bytes that are really there.
#include "common.h"
#include "zstd.h"
#include "../../utils/cpp/native_take.h"  // the C call utils makes (stream is above utils)

#include <structmember.h>
#include <algorithm>
#include <cstring>
#include <unordered_map>

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace retrace_stream {

namespace {

PyTypeObject* ReaderType = nullptr;  // set by make_reader_type

enum Kind { K_NONE = 0, K_VALUE, K_BINDING, K_SWITCH, K_DELETE };

struct RCore {
    std::string payload;
    std::vector<PyObject*> strings;                  // strong
    std::unordered_map<uint64_t, PyObject*> bindings;  // strong
};

struct Reader {
    PyObject_HEAD
    RCore core;
    PyObject* path;
    PyObject* preamble;
    PyObject* hooks;     // dict name -> from_state
    PyObject* thread;
    PyObject* head;      // decoded head value (K_VALUE) or nullptr
    PyObject* error;     // sticky RecordingFormatError
    PyObject* async_tags;  // tuple of str or nullptr: see head_is_async
    PyObject* async_marks; // frozenset of int or nullptr: see get_async_next
    int fd;
    int head_kind;
    bool missing_hook;
    uint64_t head_offset;
    size_t pos;
    uint64_t payload_offset;
    uint64_t next_offset;
    uint64_t file_size;
    uint64_t frame;
    uint64_t event;
    uint64_t next_binding;
};

PyObject* raise_format(Reader* r, const char* what, uint64_t offset, uint64_t frame, const char* todo = nullptr) {
    PyObject* e = todo
        ? PyObject_CallFunction(g.format_error, "sKKKs", what, (unsigned long long)offset, (unsigned long long)frame,
                                (unsigned long long)r->event, todo)
        : PyObject_CallFunction(g.format_error, "sKKK", what, (unsigned long long)offset, (unsigned long long)frame,
                                (unsigned long long)r->event);
    if (!e) return nullptr;
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(e)), e);
    Py_DECREF(e);
    return nullptr;
}

// Read exactly n bytes at off (fewer only at end of file). -1 on error.
ssize_t pread_full(int fd, void* buf, size_t n, uint64_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = ::pread(fd, static_cast<char*>(buf) + got, n - got, static_cast<off_t>(off + got));
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (k == 0) break;
        got += static_cast<size_t>(k);
    }
    return static_cast<ssize_t>(got);
}

// 1 = frame loaded, 0 = clean end, -1 = error set.
int next_frame(Reader* r, bool preamble) {
    uint64_t off = r->next_offset;
    uint64_t frame = preamble ? 0 : r->frame + 1;
    const char* todo = preamble ? "the recording has no complete preamble; re-record" : nullptr;
    if (off >= r->file_size) return 0;
    uint8_t fh[8];
    ssize_t n = pread_full(r->fd, fh, 8, off);
    if (n < 0) { PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, r->path); return -1; }
    if (n == 0) return 0;
    if (n < 8) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "torn frame: the file ends %zd bytes into a frame header", n);
        raise_format(r, msg, off, frame, todo);
        return -1;
    }
    uint32_t length, crc;
    std::memcpy(&length, fh, 4);
    std::memcpy(&crc, fh + 4, 4);
    bool compressed = !preamble && (length & FRAME_COMPRESSED);
    length &= ~FRAME_COMPRESSED;
    uint64_t avail = r->file_size - off - 8;
    if (length > avail) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "torn frame: %u byte payload, the file ends after %llu", length,
                      (unsigned long long)avail);
        raise_format(r, msg, off, frame, todo);
        return -1;
    }
    r->core.payload.resize(length);
    n = pread_full(r->fd, r->core.payload.data(), length, off + 8);
    if (n < 0) { PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, r->path); return -1; }
    if (static_cast<uint64_t>(n) < length) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "torn frame: %u byte payload, the file ends after %zd", length, n);
        raise_format(r, msg, off, frame, todo);
        return -1;
    }
    if (crc32(r->core.payload.data(), length) != crc) {
        raise_format(r, "CRC mismatch: the frame's bytes were changed", off, frame);
        return -1;
    }
    if (compressed) {
        // One zstd frame per recording frame; positions inside it count
        // decompressed bytes from the frame's payload offset.
        size_t size = zstd::content_size(r->core.payload.data(), length);
        if (!zstd::available()) {
            raise_format(r, "compressed frame, but libzstd (libzstd.so.1) could not be loaded", off, frame,
                         "install libzstd1 (Debian/Ubuntu: apt install libzstd1) or use RETRACE_BACKEND=python "
                         "with the zstandard package");
            return -1;
        }
        if (size == static_cast<size_t>(-1) || size > MAX_DECOMPRESSED) {
            raise_format(r, "bad compressed frame (no valid zstd content size)", off, frame);
            return -1;
        }
        std::string out(size, '\0');
        const char* why = nullptr;
        if (!zstd::decompress(r->core.payload.data(), length, out.data(), size, &why)) {
            char msg[200];
            std::snprintf(msg, sizeof msg, "bad compressed frame (%s)", why ? why : "zstd error");
            raise_format(r, msg, off, frame);
            return -1;
        }
        r->core.payload.swap(out);
    }
    r->frame = frame;
    r->pos = 0;
    r->payload_offset = off + 8;
    r->next_offset = off + 8 + length;
    return 1;
}

// ------------------------------------------------------------ decoding

struct Cursor {
    const uint8_t* p;
    const uint8_t* end;
};

PyObject* bad(const char* msg) {
    PyErr_SetString(PyExc_ValueError, msg);
    return nullptr;
}

inline bool need(Cursor& c, size_t n) { return static_cast<size_t>(c.end - c.p) >= n; }
inline uint16_t be16(const uint8_t* p) { return (uint16_t(p[0]) << 8) | p[1]; }
inline uint32_t be32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return __builtin_bswap32(v); }
inline uint64_t be64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return __builtin_bswap64(v); }

// Reads a length of `width` bytes; false on truncation.
inline bool read_len(Cursor& c, int width, size_t* n) {
    if (!need(c, width)) return false;
    *n = width == 1 ? c.p[0] : width == 2 ? be16(c.p) : be32(c.p);
    c.p += width;
    return true;
}

PyObject* decode(Reader* r, Cursor& c, int depth);

PyObject* decode_ext(Reader* r, int8_t code, const uint8_t* data, size_t len, int depth);

// Parse an ext header at c (first byte already known to be ext). Sets code/data/len.
bool parse_ext(Cursor& c, int8_t* code, const uint8_t** data, size_t* len) {
    uint8_t b = *c.p++;
    size_t n;
    switch (b) {
    case 0xd4: n = 1; break;
    case 0xd5: n = 2; break;
    case 0xd6: n = 4; break;
    case 0xd7: n = 8; break;
    case 0xd8: n = 16; break;
    case 0xc7: if (!read_len(c, 1, &n)) return false; break;
    case 0xc8: if (!read_len(c, 2, &n)) return false; break;
    default: if (!read_len(c, 4, &n)) return false; break;
    }
    if (!need(c, 1 + n)) return false;
    *code = static_cast<int8_t>(*c.p++);
    *data = c.p;
    *len = n;
    c.p += n;
    return true;
}

inline bool is_ext(uint8_t b) { return (b >= 0xc7 && b <= 0xc9) || (b >= 0xd4 && b <= 0xd8); }

PyObject* decode_array(Reader* r, Cursor& c, size_t n, int depth) {
    if (n > static_cast<size_t>(c.end - c.p)) return bad("array longer than its frame");
    PyObject* list = PyList_New(static_cast<Py_ssize_t>(n));
    if (!list) return nullptr;
    for (size_t i = 0; i < n; i++) {
        PyObject* item = decode(r, c, depth + 1);
        if (!item) { Py_DECREF(list); return nullptr; }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

PyObject* decode_map(Reader* r, Cursor& c, size_t n, int depth) {
    if (n > static_cast<size_t>(c.end - c.p) / 2) return bad("map longer than its frame");
    PyObject* d = PyDict_New();
    if (!d) return nullptr;
    for (size_t i = 0; i < n; i++) {
        PyObject* k = decode(r, c, depth + 1);
        if (!k) { Py_DECREF(d); return nullptr; }
        PyObject* v = decode(r, c, depth + 1);
        if (!v) { Py_DECREF(k); Py_DECREF(d); return nullptr; }
        int rc = PyDict_SetItem(d, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0) { Py_DECREF(d); return nullptr; }
    }
    return d;
}

PyObject* decode_str(Cursor& c, size_t n) {
    if (!need(c, n)) return bad("str runs past its frame");
    PyObject* s = PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(c.p), n, "surrogatepass");
    c.p += n;
    return s;
}

PyObject* decode(Reader* r, Cursor& c, int depth) {
    if (depth > MAX_DEPTH) return bad("value nested too deeply");
    if (!need(c, 1)) return bad("value runs past its frame");
    uint8_t b = *c.p;
    if (b < 0x80) { c.p++; return PyLong_FromLong(b); }
    if (b >= 0xe0) { c.p++; return PyLong_FromLong(static_cast<int8_t>(b)); }
    if ((b & 0xf0) == 0x80) { c.p++; return decode_map(r, c, b & 0x0f, depth); }
    if ((b & 0xf0) == 0x90) { c.p++; return decode_array(r, c, b & 0x0f, depth); }
    if ((b & 0xe0) == 0xa0) { c.p++; return decode_str(c, b & 0x1f); }
    if (is_ext(b)) {
        int8_t code;
        const uint8_t* data;
        size_t len;
        if (!parse_ext(c, &code, &data, &len)) return bad("extension runs past its frame");
        if (code == EXT_NEW_BINDING || code == EXT_BINDING_DELETE || code == EXT_THREAD_SWITCH)
            return bad("event marker inside a value");
        return decode_ext(r, code, data, len, depth);
    }
    c.p++;
    size_t n;
    switch (b) {
    case 0xc0: Py_RETURN_NONE;
    case 0xc2: Py_RETURN_FALSE;
    case 0xc3: Py_RETURN_TRUE;
    case 0xc4: case 0xc5: case 0xc6: {
        if (!read_len(c, b == 0xc4 ? 1 : b == 0xc5 ? 2 : 4, &n)) return bad("bin runs past its frame");
        if (!need(c, n)) return bad("bin runs past its frame");
        PyObject* o = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(c.p), n);
        c.p += n;
        return o;
    }
    case 0xca: {
        if (!need(c, 4)) return bad("float runs past its frame");
        uint32_t bits = be32(c.p); c.p += 4;
        float f; std::memcpy(&f, &bits, 4);
        return PyFloat_FromDouble(f);
    }
    case 0xcb: {
        if (!need(c, 8)) return bad("float runs past its frame");
        uint64_t bits = be64(c.p); c.p += 8;
        double d; std::memcpy(&d, &bits, 8);
        return PyFloat_FromDouble(d);
    }
    case 0xcc: if (!need(c, 1)) break; c.p += 1; return PyLong_FromLong(c.p[-1]);
    case 0xcd: if (!need(c, 2)) break; c.p += 2; return PyLong_FromLong(be16(c.p - 2));
    case 0xce: if (!need(c, 4)) break; c.p += 4; return PyLong_FromUnsignedLong(be32(c.p - 4));
    case 0xcf: if (!need(c, 8)) break; c.p += 8; return PyLong_FromUnsignedLongLong(be64(c.p - 8));
    case 0xd0: if (!need(c, 1)) break; c.p += 1; return PyLong_FromLong(static_cast<int8_t>(c.p[-1]));
    case 0xd1: if (!need(c, 2)) break; c.p += 2; return PyLong_FromLong(static_cast<int16_t>(be16(c.p - 2)));
    case 0xd2: if (!need(c, 4)) break; c.p += 4; return PyLong_FromLong(static_cast<int32_t>(be32(c.p - 4)));
    case 0xd3: if (!need(c, 8)) break; c.p += 8; return PyLong_FromLongLong(static_cast<int64_t>(be64(c.p - 8)));
    case 0xd9: if (!read_len(c, 1, &n)) break; return decode_str(c, n);
    case 0xda: if (!read_len(c, 2, &n)) break; return decode_str(c, n);
    case 0xdb: if (!read_len(c, 4, &n)) break; return decode_str(c, n);
    case 0xdc: if (!read_len(c, 2, &n)) break; return decode_array(r, c, n, depth);
    case 0xdd: if (!read_len(c, 4, &n)) break; return decode_array(r, c, n, depth);
    case 0xde: if (!read_len(c, 2, &n)) break; return decode_map(r, c, n, depth);
    case 0xdf: if (!read_len(c, 4, &n)) break; return decode_map(r, c, n, depth);
    default: return bad("invalid msgpack type byte 0xc1");
    }
    return bad("value runs past its frame");
}

bool read_index(const uint8_t* data, size_t len, uint64_t* out) {
    switch (len) {
    case 1: *out = data[0]; return true;
    case 2: *out = be16(data); return true;
    case 4: *out = be32(data); return true;
    case 8: *out = be64(data); return true;
    }
    PyErr_Format(PyExc_ValueError, "index of %zu bytes", len);
    return false;
}

// The whole of data must be one array; returns the list.
PyObject* decode_whole_array(Reader* r, const uint8_t* data, size_t len, int depth) {
    Cursor c{data, data + len};
    PyObject* v = decode(r, c, depth + 1);
    if (!v) return nullptr;
    if (c.p != c.end) { Py_DECREF(v); return bad("extra bytes in an extension payload"); }
    if (!PyList_CheckExact(v)) { Py_DECREF(v); return bad("extension payload is not an array"); }
    return v;
}

PyObject* decode_ext(Reader* r, int8_t code, const uint8_t* data, size_t len, int depth) {
    switch (code) {
    case EXT_STR_REF: {
        uint64_t idx;
        if (!read_index(data, len, &idx)) return nullptr;
        if (idx >= r->core.strings.size()) return bad("reference to an undefined interned string");
        return Py_NewRef(r->core.strings[idx]);
    }
    case EXT_STR_DEF: {
        PyObject* s = PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(data), len, "surrogatepass");
        if (!s) return nullptr;
        r->core.strings.push_back(Py_NewRef(s));
        return s;
    }
    case EXT_HANDLE: {
        uint64_t idx;
        if (!read_index(data, len, &idx)) return nullptr;
        auto it = r->core.bindings.find(idx);
        if (it == r->core.bindings.end()) {
            PyErr_Format(PyExc_ValueError, "handle %llu refers to no live binding", (unsigned long long)idx);
            return nullptr;
        }
        return Py_NewRef(it->second);
    }
    case EXT_TUPLE: case EXT_SET: case EXT_FROZENSET: {
        PyObject* list = decode_whole_array(r, data, len, depth);
        if (!list) return nullptr;
        PyObject* out = code == EXT_TUPLE ? PyList_AsTuple(list) : code == EXT_SET ? PySet_New(list) : PyFrozenSet_New(list);
        Py_DECREF(list);
        return out;
    }
    case EXT_BIGINT: {
        if (len == 0) return bad("empty big int");
        PyObject* b = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(data), len);
        if (!b) return nullptr;
        PyObject* v = PyObject_CallMethod(reinterpret_cast<PyObject*>(&PyLong_Type), "from_bytes", "Os", b, "big");
        Py_DECREF(b);
        if (!v) return nullptr;
        // from_bytes(..., signed=True) without keyword plumbing: fix the sign here.
        if (data[0] & 0x80) {
            PyObject* one = PyLong_FromLong(1);
            PyObject* shift = PyLong_FromSize_t(len * 8);
            PyObject* mod = one && shift ? PyNumber_Lshift(one, shift) : nullptr;
            PyObject* neg = mod ? PyNumber_Subtract(v, mod) : nullptr;
            Py_XDECREF(one); Py_XDECREF(shift); Py_XDECREF(mod);
            Py_DECREF(v);
            return neg;
        }
        return v;
    }
    case EXT_OBJECT: {
        Cursor c{data, data + len};
        PyObject* state = decode(r, c, depth + 1);
        if (!state) return nullptr;
        if (c.p != c.end) { Py_DECREF(state); return bad("extra bytes in an extension payload"); }
        PyObject* v = PyObject_CallOneArg(g.rebuild_value, state);
        Py_DECREF(state);
        return v;
    }
    case EXT_HOOK: {
        PyObject* pair = decode_whole_array(r, data, len, depth);
        if (!pair) return nullptr;
        if (PyList_GET_SIZE(pair) != 2 || !PyUnicode_Check(PyList_GET_ITEM(pair, 0))) {
            Py_DECREF(pair);
            return bad("hook payload is not [name, state]");
        }
        PyObject* fn = PyDict_GetItemWithError(r->hooks, PyList_GET_ITEM(pair, 0));
        if (!fn) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_LookupError,
                             "no reader hook registered for %R (StreamReader.register(name, from_state))",
                             PyList_GET_ITEM(pair, 0));
                r->missing_hook = true;
            }
            Py_DECREF(pair);
            return nullptr;
        }
        PyObject* v = PyObject_CallOneArg(fn, PyList_GET_ITEM(pair, 1));
        Py_DECREF(pair);
        return v;
    }
    }
    PyErr_Format(PyExc_ValueError, "unknown extension type %d", code);
    return nullptr;
}

// ------------------------------------------------------------ events

// Decode the next raw event. Returns its kind (K_NONE at clean end), -1 on error.
// For K_VALUE / K_SWITCH *value is set (new ref); for K_DELETE *index.
int decode_next(Reader* r, PyObject** value, uint64_t* index, uint64_t* offset) {
    if (r->error) {
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(r->error)), r->error);
        return -1;
    }
    while (r->pos >= r->core.payload.size()) {
        int more = next_frame(r, false);
        if (more < 0) {
            if (PyErr_ExceptionMatches(g.recording_format_error)) {
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS
                r->error = PyErr_GetRaisedException();
                PyErr_SetRaisedException(Py_NewRef(r->error));
#else
                PyObject *t, *v, *tb;
                PyErr_Fetch(&t, &v, &tb);
                PyErr_NormalizeException(&t, &v, &tb);
                r->error = Py_NewRef(v);
                PyErr_Restore(t, v, tb);
#endif
            }
            return -1;
        }
        if (!more) return K_NONE;
    }
    const uint8_t* base = reinterpret_cast<const uint8_t*>(r->core.payload.data());
    Cursor c{base + r->pos, base + r->core.payload.size()};
    *offset = r->payload_offset + r->pos;
    int kind = K_VALUE;
    PyObject* v = nullptr;
    if (is_ext(*c.p)) {
        Cursor probe = c;
        int8_t code;
        const uint8_t* data;
        size_t len;
        if (parse_ext(probe, &code, &data, &len)) {
            if (code == EXT_NEW_BINDING) {
                if (len) bad("NEW_BINDING with a payload");
                else { kind = K_BINDING; v = Py_NewRef(Py_None); c = probe; }
            } else if (code == EXT_BINDING_DELETE) {
                if (read_index(data, len, index)) { kind = K_DELETE; v = Py_NewRef(Py_None); c = probe; }
            } else if (code == EXT_THREAD_SWITCH) {
                Cursor inner{data, data + len};
                v = decode(r, inner, 1);
                if (v && inner.p != inner.end) { Py_CLEAR(v); bad("extra bytes in THREAD_SWITCH"); }
                kind = K_SWITCH;
                c = probe;
            }
        }
    }
    if (kind == K_VALUE && !PyErr_Occurred()) v = decode(r, c, 0);
    if (!v) {
        if (r->missing_hook) { r->missing_hook = false; return -1; }
        // Wrap whatever went wrong as damage at this event.
        PyObject* name = nullptr;
        PyObject* msg = nullptr;
#if PY_VERSION_HEX >= 0x030C0000  // PYVERSIONS
        PyObject* exc = PyErr_GetRaisedException();
#else
        PyObject *t, *exc, *tb;
        PyErr_Fetch(&t, &exc, &tb);
        PyErr_NormalizeException(&t, &exc, &tb);
        Py_XDECREF(t);
        Py_XDECREF(tb);
#endif
        if (exc) {
            name = PyObject_GetAttrString(reinterpret_cast<PyObject*>(Py_TYPE(exc)), "__name__");
            msg = PyObject_Str(exc);
        }
        PyObject* what = PyUnicode_FromFormat("undecodable event (%S: %S)", name ? name : Py_None, msg ? msg : Py_None);
        Py_XDECREF(name);
        Py_XDECREF(msg);
        Py_XDECREF(exc);
        PyErr_Clear();
        if (!what) return -1;
        PyObject* e = PyObject_CallFunction(g.format_error, "OKKK", what, (unsigned long long)*offset,
                                            (unsigned long long)r->frame, (unsigned long long)r->event);
        Py_DECREF(what);
        if (!e) return -1;
        r->error = e;
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(e)), e);
        return -1;
    }
    r->pos = static_cast<size_t>(c.p - base);
    *value = v;
    return kind;
}

// Make the head the next value/binding; applies switches and deletes.
// 1 = head ready, 0 = end, -1 = error.
int fill(Reader* r) {
    while (!r->head_kind) {
        PyObject* v = nullptr;
        uint64_t index = 0, offset = 0;
        int kind = decode_next(r, &v, &index, &offset);
        if (kind < 0) return -1;
        if (kind == K_NONE) return 0;
        if (kind == K_SWITCH) {
            Py_XSETREF(r->thread, v);
            r->event++;
        } else if (kind == K_DELETE) {
            Py_DECREF(v);
            auto it = r->core.bindings.find(index);
            if (it != r->core.bindings.end()) {
                PyObject* o = it->second;
                r->core.bindings.erase(it);
                Py_DECREF(o);
            }
            r->event++;
        } else {
            r->head_kind = kind;
            r->head = v;
            r->head_offset = offset;
        }
    }
    return 1;
}

PyObject* Reader_read(PyObject* self, PyObject*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    int rc = fill(r);
    if (rc < 0) return nullptr;
    if (rc == 0) { PyErr_SetString(PyExc_EOFError, "end of recording"); return nullptr; }
    if (r->head_kind == K_BINDING) {
        PyErr_SetString(PyExc_ValueError, "the next event is NEW_BINDING: call bind(obj), not read()");
        return nullptr;
    }
    PyObject* v = r->head;
    r->head = nullptr;
    r->head_kind = K_NONE;
    r->event++;
    return v;
}

PyObject* Reader_next(PyObject* self) {
    Reader* r = reinterpret_cast<Reader*>(self);
    PyObject* v = Reader_read(self, nullptr);
    if (!v && PyErr_ExceptionMatches(PyExc_EOFError)) { PyErr_Clear(); }
    (void)r;
    return v;
}

PyObject* Reader_bind(PyObject* self, PyObject* obj) {
    Reader* r = reinterpret_cast<Reader*>(self);
    int rc = fill(r);
    if (rc < 0) return nullptr;
    if (rc == 0) { PyErr_SetString(PyExc_EOFError, "end of recording"); return nullptr; }
    if (r->head_kind != K_BINDING) {
        PyErr_SetString(PyExc_ValueError, "the next event is a value, not NEW_BINDING: call read()");
        return nullptr;
    }
    Py_CLEAR(r->head);
    r->head_kind = K_NONE;
    r->core.bindings[r->next_binding++] = Py_NewRef(obj);
    r->event++;
    Py_RETURN_NONE;
}

// ------------------------------------------------------------ take_call

// Two exact strs with the same code points (no rich-compare dispatch: the
// fast path compares a tag and a name per event).
inline bool same_str(PyObject* a, PyObject* b) {
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(a) || !PyUnicode_IS_READY(b)) return PyUnicode_Compare(a, b) == 0;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    if (n != PyUnicode_GET_LENGTH(b) || PyUnicode_KIND(a) != PyUnicode_KIND(b)) return false;
    return std::memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), static_cast<size_t>(n) * PyUnicode_KIND(a)) == 0;
}

inline bool same(PyObject* a, PyObject* b) {
    if (a == b) return true;
    if (!a || !b) return false;
    if (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b)) return same_str(a, b);
    int eq = PyObject_RichCompareBool(a, b, Py_EQ);
    if (eq < 0) { PyErr_Clear(); return false; }
    return eq == 1;
}

// An exact int as sign and magnitude; false (no error set) when it does not
// fit in 64 bits.
inline bool int_parts(PyObject* v, bool* neg, uint64_t* mag) {
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow == 0) {
        if (x == -1 && PyErr_Occurred()) { PyErr_Clear(); return false; }
        *neg = x < 0;
        *mag = x < 0 ? 0 - static_cast<uint64_t>(x) : static_cast<uint64_t>(x);
        return true;
    }
    if (overflow < 0) return false;
    unsigned long long u = PyLong_AsUnsignedLongLong(v);
    if (u == static_cast<unsigned long long>(-1) && PyErr_Occurred()) { PyErr_Clear(); return false; }
    *neg = false;
    *mag = u;
    return true;
}

// The msgpack integer at c, as sign and magnitude, without making an int:
// the number of bytes it takes, or 0 when c is not a (whole) integer.
inline size_t raw_int(const uint8_t* p, const uint8_t* end, bool* neg, uint64_t* mag) {
    uint8_t b = *p;
    auto signed_parts = [&](int64_t x) { *neg = x < 0; *mag = x < 0 ? 0 - static_cast<uint64_t>(x) : x; };
    size_t left = static_cast<size_t>(end - p) - 1;
    if (b < 0x80) { *neg = false; *mag = b; return 1; }
    if (b >= 0xe0) { signed_parts(static_cast<int8_t>(b)); return 1; }
    switch (b) {
    case 0xcc: if (left < 1) return 0; *neg = false; *mag = p[1]; return 2;
    case 0xcd: if (left < 2) return 0; *neg = false; *mag = be16(p + 1); return 3;
    case 0xce: if (left < 4) return 0; *neg = false; *mag = be32(p + 1); return 5;
    case 0xcf: if (left < 8) return 0; *neg = false; *mag = be64(p + 1); return 9;
    case 0xd0: if (left < 1) return 0; signed_parts(static_cast<int8_t>(p[1])); return 2;
    case 0xd1: if (left < 2) return 0; signed_parts(static_cast<int16_t>(be16(p + 1))); return 3;
    case 0xd2: if (left < 4) return 0; signed_parts(static_cast<int32_t>(be32(p + 1))); return 5;
    case 0xd3: if (left < 8) return 0; signed_parts(static_cast<int64_t>(be64(p + 1))); return 9;
    default: return 0;
    }
}

// Lookahead inside the current frame: the value event at `pos` (new ref),
// advancing `pos`; nullptr (no error set) at the frame's end, at a marker
// (thread switch, binding, delete) or on damage -- the caller then consumes
// nothing and the ordinary reads report whatever is there.
PyObject* value_ahead(Reader* r, size_t& pos) {
    const uint8_t* base = reinterpret_cast<const uint8_t*>(r->core.payload.data());
    const uint8_t* end = base + r->core.payload.size();
    if (base + pos >= end) return nullptr;
    Cursor c{base + pos, end};
    if (is_ext(*c.p)) {
        Cursor probe = c;
        int8_t code;
        const uint8_t* data;
        size_t len;
        if (!parse_ext(probe, &code, &data, &len)) { PyErr_Clear(); return nullptr; }
        if (code == EXT_NEW_BINDING || code == EXT_BINDING_DELETE || code == EXT_THREAD_SWITCH) return nullptr;
    }
    PyObject* v = decode(r, c, 0);
    if (!v) {
        PyErr_Clear();
        r->missing_hook = false;
        return nullptr;
    }
    pos = static_cast<size_t>(c.p - base);
    return v;
}

// Lookahead that compares instead of decoding: 1 when the value event at
// `pos` equals `want` (pos advanced past it), 0 when it does not or cannot
// tell (pos unchanged, and no string it decoded left defined). An interned-string reference
// is compared with the table's string, an integer as raw bytes: neither
// makes an object, so the fast path's name, fingerprint and tags cost a
// compare each.
int match_ahead(Reader* r, size_t& pos, PyObject* want) {
    const uint8_t* base = reinterpret_cast<const uint8_t*>(r->core.payload.data());
    const uint8_t* end = base + r->core.payload.size();
    if (base + pos >= end) return 0;
    const uint8_t* p = base + pos;
    if (PyLong_CheckExact(want)) {
        bool neg, wneg;
        uint64_t mag, wmag;
        size_t n = raw_int(p, end, &neg, &mag);
        if (n && int_parts(want, &wneg, &wmag)) {
            if (neg != wneg || mag != wmag) return 0;
            pos += n;
            return 1;
        }
    } else if (PyUnicode_CheckExact(want) && is_ext(*p)) {
        Cursor probe{p, end};
        int8_t code;
        const uint8_t* data;
        size_t len;
        uint64_t idx;
        if (!parse_ext(probe, &code, &data, &len)) return 0;
        if (code == EXT_STR_REF) {
            if (!read_index(data, len, &idx)) { PyErr_Clear(); return 0; }
            if (idx >= r->core.strings.size() || !same(r->core.strings[idx], want)) return 0;
            pos = static_cast<size_t>(probe.p - base);
            return 1;
        }
    }
    size_t at = pos;
    size_t nstrings = r->core.strings.size();
    PyObject* v = value_ahead(r, at);
    bool eq = v && same(v, want);
    Py_XDECREF(v);
    if (!eq) {
        // A string this value defined is defined again when it is read
        // again (by the next match or the ordinary read).
        while (r->core.strings.size() > nstrings) {
            Py_DECREF(r->core.strings.back());
            r->core.strings.pop_back();
        }
        return 0;
    }
    pos = at;
    return 1;
}

// Asynchronous events (docs/EVENTS.md: SIGNAL) happen between two of a
// thread's events at a position only the replay's Python side can find. After
// a fast-path take, a head that is such an event's tag (one of `async_tags`,
// set by the engine) counts as "the head left the thread": the caller then
// calls handover(), whose Python code arms the search for the position.
// The one check this file has for them; no cost when async_tags is unset.
bool head_is_async(Reader* r) {
    if (!r->async_tags || r->head_kind != K_VALUE || !r->head || !PyUnicode_CheckExact(r->head)) return false;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(r->async_tags); i++)
        if (same(r->head, PyTuple_GET_ITEM(r->async_tags, i))) return true;
    return false;
}

// take_call(thread, call_tag, name, fp, result_tag, error_tag) -> None | (ok, value, same_thread)
//
// The replay's fast path (utils.ReplayCallGateway): when the next events are
// `call_tag name fp` followed by `result_tag value` or `error_tag exc`, all
// of logical thread `thread` with nothing in between, consume the five and
// return (True, value) / (False, exc) plus whether the event after them is
// again `thread`'s (False at the end, at a switch, or on damage: the caller
// hands the turn over). Anything else consumes nothing and returns None:
// the engine's ordinary path reads (and reports) it. Never raises for the
// tape's contents. GIL held throughout; another thread sees the head (this
// CALL, on `thread`) unchanged until the five are consumed at once.
PyObject* Reader_take_call(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Reader* r = reinterpret_cast<Reader*>(self);
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "take_call(thread, call_tag, name, fp, result_tag, error_tag)");
        return nullptr;
    }
    if (r->error) Py_RETURN_NONE;
    int rc = fill(r);
    if (rc < 0) { PyErr_Clear(); Py_RETURN_NONE; }
    if (rc == 0 || r->head_kind != K_VALUE || !same(r->thread ? r->thread : Py_None, args[0]) ||
        !same(r->head, args[1]))
        Py_RETURN_NONE;
    size_t pos = r->pos;
    size_t nstrings = r->core.strings.size();
    bool is_result = false;
    PyObject* value = nullptr;
    if (match_ahead(r, pos, args[2]) && match_ahead(r, pos, args[3]) &&
        ((is_result = match_ahead(r, pos, args[4])) || match_ahead(r, pos, args[5])))
        value = value_ahead(r, pos);
    if (!value) {
        // Strings the lookahead defined are defined again when really read.
        while (r->core.strings.size() > nstrings) {
            Py_DECREF(r->core.strings.back());
            r->core.strings.pop_back();
        }
        Py_RETURN_NONE;
    }
    r->pos = pos;
    Py_CLEAR(r->head);
    r->head_kind = K_NONE;
    r->event += 5;
    int more = fill(r);
    if (more < 0) PyErr_Clear();  // sticky: the next read reports the damage
    bool same_thread = more == 1 && same(r->thread ? r->thread : Py_None, args[0]) && !head_is_async(r);
    PyObject* out = PyTuple_New(3);
    if (!out) { Py_DECREF(value); return nullptr; }
    PyTuple_SET_ITEM(out, 0, Py_NewRef(is_result ? Py_True : Py_False));
    PyTuple_SET_ITEM(out, 1, value);
    PyTuple_SET_ITEM(out, 2, Py_NewRef(same_thread ? Py_True : Py_False));
    return out;
}

// take_event(thread, tag, accept) -> None | (value, same_thread)
//
// The replay's fast path for a two-value event (`tag value`, a lock's SYNC):
// when the next events are `tag value` of logical thread `thread` and
// accept(value) is true, consume both; else consume nothing and return None.
// accept runs before anything is consumed (a replayed lock acquire takes the
// real lock there, without blocking), so the event and its effect happen
// together; another thread sees this thread's event at the head until then.
// The core of take_event, for the Python method below and for the C call
// utils' ReplaySyncGateway makes (native_take.h): 1 taken (*value_out a new
// reference), 0 nothing consumed, -1 error (nothing consumed).
int take_event_core(Reader* r, PyObject* thread, PyObject* tag, retrace_accept_fn accept, void* ctx,
                    PyObject** value_out, int* same_thread_out) {
    if (r->error) return 0;
    int rc = fill(r);
    if (rc < 0) { PyErr_Clear(); return 0; }
    if (rc == 0 || r->head_kind != K_VALUE || !same(r->thread ? r->thread : Py_None, thread) ||
        !same(r->head, tag))
        return 0;
    size_t pos = r->pos;
    const size_t start = pos;
    PyObject* const head = r->head;
    size_t nstrings = r->core.strings.size();
    PyObject* value = value_ahead(r, pos);
    auto undo = [&] {
        Py_XDECREF(value);
        while (r->core.strings.size() > nstrings) {
            Py_DECREF(r->core.strings.back());
            r->core.strings.pop_back();
        }
    };
    if (!value) { undo(); return 0; }
    int yes = accept(ctx, value);
    if (yes < 0) { undo(); return -1; }
    // accept may have let another thread run: the head must still be ours.
    if (r->head_kind != K_VALUE || r->head != head || r->pos != start) {
        // Someone read while accept ran Python code (only a deadlock report
        // does): their reads stand; ours is dropped without undoing.
        Py_DECREF(value);
        return 0;
    }
    if (!yes) { undo(); return 0; }
    r->pos = pos;
    Py_CLEAR(r->head);
    r->head_kind = K_NONE;
    r->event += 2;
    int more = fill(r);
    if (more < 0) PyErr_Clear();
    *same_thread_out = more == 1 && same(r->thread ? r->thread : Py_None, thread) && !head_is_async(r);
    *value_out = value;
    return 1;
}

// accept for the Python method: calls the Python accept(value).
int accept_by_call(void* ctx, PyObject* value) {
    PyObject* ok = PyObject_CallOneArg(static_cast<PyObject*>(ctx), value);
    if (!ok) return -1;
    int yes = PyObject_IsTrue(ok);
    Py_DECREF(ok);
    return yes;
}

PyObject* Reader_take_event(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "take_event(thread, tag, accept)");
        return nullptr;
    }
    PyObject* value = nullptr;
    int same_thread = 0;
    int rc = take_event_core(reinterpret_cast<Reader*>(self), args[0], args[1], accept_by_call, args[2], &value,
                             &same_thread);
    if (rc < 0) return nullptr;
    if (rc == 0) Py_RETURN_NONE;
    PyObject* out = PyTuple_New(2);
    if (!out) { Py_DECREF(value); return nullptr; }
    PyTuple_SET_ITEM(out, 0, value);
    PyTuple_SET_ITEM(out, 1, Py_NewRef(same_thread ? Py_True : Py_False));
    return out;
}

// The C call (native_take.h), checked to be given a Reader.
int native_take_event(PyObject* reader, PyObject* thread, PyObject* tag, retrace_accept_fn accept, void* ctx,
                      PyObject** value, int* same_thread) {
    if (!PyObject_TypeCheck(reader, ReaderType)) {
        PyErr_SetString(PyExc_TypeError, "native take_event: not a StreamReader");
        return -1;
    }
    return take_event_core(reinterpret_cast<Reader*>(reader), thread, tag, accept, ctx, value, same_thread);
}

const RetraceNativeTake native_take{1, native_take_event};

PyObject* get_native_take_event(PyObject*, void*) {
    return PyCapsule_New(const_cast<RetraceNativeTake*>(&native_take), RETRACE_NATIVE_TAKE_NAME, nullptr);
}

// ------------------------------------------------------------ scan

// skip: a value passed over as decode() would read it, without making it:
// the string definitions inside it still go into the table (later
// references count on them), nothing else is built and no hook runs. False
// on damage (no exception set).
bool skip(Reader* r, Cursor& c, int depth);

bool skip_n(Reader* r, Cursor& c, size_t n, int depth) {
    if (n > static_cast<size_t>(c.end - c.p)) return false;  // each item takes a byte at least
    for (size_t i = 0; i < n; i++)
        if (!skip(r, c, depth + 1)) return false;
    return true;
}

inline bool skip_bytes(Cursor& c, size_t n) {
    if (!need(c, n)) return false;
    c.p += n;
    return true;
}

bool skip_whole(Reader* r, const uint8_t* data, size_t len, int depth) {
    Cursor in{data, data + len};
    return skip(r, in, depth + 1) && in.p == in.end;
}

bool skip(Reader* r, Cursor& c, int depth) {
    if (depth > MAX_DEPTH || !need(c, 1)) return false;
    uint8_t b = *c.p;
    if (b < 0x80 || b >= 0xe0) { c.p++; return true; }
    if ((b & 0xf0) == 0x80) { c.p++; return skip_n(r, c, size_t(b & 0x0f) * 2, depth); }
    if ((b & 0xf0) == 0x90) { c.p++; return skip_n(r, c, b & 0x0f, depth); }
    if ((b & 0xe0) == 0xa0) { c.p++; return skip_bytes(c, b & 0x1f); }
    if (is_ext(b)) {
        int8_t code;
        const uint8_t* data;
        size_t len;
        if (!parse_ext(c, &code, &data, &len)) return false;
        uint64_t idx;
        switch (code) {
        case EXT_STR_DEF: {
            PyObject* str = PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(data), len, "surrogatepass");
            if (!str) { PyErr_Clear(); return false; }
            r->core.strings.push_back(str);
            return true;
        }
        case EXT_STR_REF:
            if (!read_index(data, len, &idx)) { PyErr_Clear(); return false; }
            return idx < r->core.strings.size();
        case EXT_HANDLE:
            if (!read_index(data, len, &idx)) { PyErr_Clear(); return false; }
            return true;
        case EXT_BIGINT: return len > 0;
        case EXT_TUPLE: case EXT_SET: case EXT_FROZENSET: case EXT_HOOK:  // one array (decode_whole_array)
            if (len == 0 || !((data[0] & 0xf0) == 0x90 || data[0] == 0xdc || data[0] == 0xdd)) return false;
            return skip_whole(r, data, len, depth);
        case EXT_OBJECT: return skip_whole(r, data, len, depth);
        default: return false;  // a marker inside a value, or an unknown extension
        }
    }
    c.p++;
    size_t n;
    switch (b) {
    case 0xc0: case 0xc2: case 0xc3: return true;
    case 0xc4: return read_len(c, 1, &n) && skip_bytes(c, n);
    case 0xc5: return read_len(c, 2, &n) && skip_bytes(c, n);
    case 0xc6: return read_len(c, 4, &n) && skip_bytes(c, n);
    case 0xca: return skip_bytes(c, 4);
    case 0xcb: return skip_bytes(c, 8);
    case 0xcc: case 0xd0: return skip_bytes(c, 1);
    case 0xcd: case 0xd1: return skip_bytes(c, 2);
    case 0xce: case 0xd2: return skip_bytes(c, 4);
    case 0xcf: case 0xd3: return skip_bytes(c, 8);
    case 0xd9: return read_len(c, 1, &n) && skip_bytes(c, n);
    case 0xda: return read_len(c, 2, &n) && skip_bytes(c, n);
    case 0xdb: return read_len(c, 4, &n) && skip_bytes(c, n);
    case 0xdc: return read_len(c, 2, &n) && skip_n(r, c, n, depth);
    case 0xdd: return read_len(c, 4, &n) && skip_n(r, c, n, depth);
    case 0xde: return read_len(c, 2, &n) && n <= SIZE_MAX / 2 && skip_n(r, c, n * 2, depth);
    case 0xdf: return read_len(c, 4, &n) && n <= SIZE_MAX / 2 && skip_n(r, c, n * 2, depth);
    default: return false;
    }
}

// Whether the value at c is the str `tag` (its UTF-8 bytes `want`): an
// inline str or a table definition compared as bytes, a table reference by
// the table's string.
bool value_is_tag(Reader* r, const Cursor& c, PyObject* tag, const char* want, Py_ssize_t nwant) {
    uint8_t b = *c.p;
    size_t n = 0, head = 1, left = static_cast<size_t>(c.end - c.p);
    if ((b & 0xe0) == 0xa0) n = b & 0x1f;
    else if (b == 0xd9 && left >= 2) { n = c.p[1]; head = 2; }
    else if (b == 0xda && left >= 3) { n = be16(c.p + 1); head = 3; }
    else if (b == 0xdb && left >= 5) { n = be32(c.p + 1); head = 5; }
    else if (is_ext(b)) {
        Cursor probe = c;
        int8_t code;
        const uint8_t* data;
        size_t len;
        uint64_t idx;
        if (!parse_ext(probe, &code, &data, &len)) return false;
        if (code == EXT_STR_DEF) return len == static_cast<size_t>(nwant) && std::memcmp(data, want, len) == 0;
        if (code != EXT_STR_REF || !read_index(data, len, &idx)) { PyErr_Clear(); return false; }
        return idx < r->core.strings.size() && same(r->core.strings[idx], tag);
    } else {
        return false;
    }
    return n == static_cast<size_t>(nwant) && left >= head + n &&
           std::memcmp(c.p + head, want, n) == 0;
}

// The next event's kind as fill() finds it (K_VALUE, K_BINDING, K_NONE, or
// -1 on damage), without decoding it: thread switches and binding deletes
// before it are applied and counted on the way, as reads count them.
int scan_head(Reader* r) {
    for (;;) {
        while (r->pos >= r->core.payload.size()) {
            int more = next_frame(r, false);
            if (more <= 0) return more;
        }
        const uint8_t* base = reinterpret_cast<const uint8_t*>(r->core.payload.data());
        Cursor c{base + r->pos, base + r->core.payload.size()};
        if (!is_ext(*c.p)) return K_VALUE;
        int8_t code;
        const uint8_t* data;
        size_t len;
        if (!parse_ext(c, &code, &data, &len)) return -1;
        if (code == EXT_NEW_BINDING) return K_BINDING;
        if (code == EXT_BINDING_DELETE) {
            r->pos = static_cast<size_t>(c.p - base);
            r->event++;
        } else if (code == EXT_THREAD_SWITCH) {
            Cursor inner{data, data + len};
            PyObject* v = decode(r, inner, 1);
            if (!v || inner.p != inner.end) { Py_XDECREF(v); return -1; }
            Py_XSETREF(r->thread, v);
            r->pos = static_cast<size_t>(c.p - base);
            r->event++;
        } else {
            return K_VALUE;
        }
    }
}

// Whether the bytes `want` occur in some frame of the rest of the tape (a
// reader nothing was read from), the frames read but not parsed; the
// reader is left where it was. An event equal to a string writes the
// string's UTF-8 bytes (as itself or as the string table's definition of
// it), so a tape without them has no such event: scan() then parses
// nothing, and most tapes have no SIGNAL (a whole-tape parse was about a
// tenth of a lock-heavy replay). Damage counts as "maybe": the parse
// finds and stops at it as before.
bool tape_contains(Reader* r, const char* want, size_t nwant) {
    const uint64_t next_offset = r->next_offset, frame = r->frame, payload_offset = r->payload_offset;
    const size_t pos = r->pos;
    std::string payload;
    payload.swap(r->core.payload);
    bool found = false;
    for (;;) {
        int more = next_frame(r, false);
        if (more < 0) PyErr_Clear();
        if (more <= 0) {
            found = found || more < 0;
            break;
        }
        const std::string& p = r->core.payload;
        if (p.size() >= nwant && memmem(p.data(), p.size(), want, nwant)) {
            found = true;
            break;
        }
    }
    r->core.payload.swap(payload);
    r->next_offset = next_offset;
    r->frame = frame;
    r->payload_offset = payload_offset;
    r->pos = pos;
    return found;
}

// scan(tag, nvalues) -> [(index, thread, after_previous, values)]
//
// Reads the rest of the tape, from a reader nothing was read from yet, and
// returns every value event equal to the str `tag`: its event index, its
// thread, the event index just after that thread's previous event (None
// for its first), and the up to `nvalues` value events right after it,
// decoded (what the tag is followed by). Other values are passed over
// without being made (strings they define still count), so a whole tape is
// read at a few ns per event. Damage ends the scan: what was found before
// it is returned (the replay reports the damage when it gets there).
PyObject* Reader_scan(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Reader* r = reinterpret_cast<Reader*>(self);
    Py_ssize_t nvalues;
    if (nargs != 2 || !PyUnicode_CheckExact(args[0]) || (nvalues = PyLong_AsSsize_t(args[1])) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "scan(tag: str, nvalues: int >= 0)");
        return nullptr;
    }
    if (r->head_kind != K_NONE || r->event != 0) {
        PyErr_SetString(PyExc_ValueError, "scan() reads a whole tape: call it on a reader nothing was read from");
        return nullptr;
    }
    PyObject* tag = args[0];
    Py_ssize_t nwant;
    const char* want = PyUnicode_AsUTF8AndSize(tag, &nwant);
    if (!want) return nullptr;
    if (nwant > 0 && !tape_contains(r, want, static_cast<size_t>(nwant))) return PyList_New(0);
    PyObject* out = PyList_New(0);
    // thread -> the index just after its previous event, written when the
    // next event is another thread's (the same thread's own run needs none).
    PyObject* last = PyDict_New();
    PyObject* previous = nullptr;   // the thread of the previous event (strong)
    bool failed = !out || !last;
    while (!failed) {
        int kind = scan_head(r);
        if (kind < 0) break;
        if (kind == K_NONE) break;
        PyObject* tid = r->thread ? r->thread : Py_None;
        bool same_as_previous = previous && (previous == tid || same(previous, tid));
        uint64_t index = r->event;
        if (!same_as_previous) {
            if (previous) {  // the previous thread's run ended just before this event
                PyObject* at = PyLong_FromUnsignedLongLong(index);
                int rc = at ? PyDict_SetItem(last, previous, at) : -1;
                Py_XDECREF(at);
                if (rc < 0) { failed = true; break; }
            }
            Py_XSETREF(previous, Py_NewRef(tid));
        }
        const uint8_t* base = reinterpret_cast<const uint8_t*>(r->core.payload.data());
        Cursor c{base + r->pos, base + r->core.payload.size()};
        if (kind == K_BINDING) {
            int8_t code;
            const uint8_t* data;
            size_t len;
            parse_ext(c, &code, &data, &len);
            r->pos = static_cast<size_t>(c.p - base);
            r->event++;
            r->next_binding++;
            continue;
        }
        bool is_tag = value_is_tag(r, c, tag, want, nwant);
        if (!skip(r, c, 0)) break;
        r->pos = static_cast<size_t>(c.p - base);
        r->event++;
        if (!is_tag) continue;
        PyObject* values = PyList_New(0);
        if (!values) { failed = true; break; }
        bool damaged = false;
        for (Py_ssize_t i = 0; i < nvalues; i++) {
            int k = scan_head(r);
            if (k != K_VALUE) { damaged = k < 0; break; }
            const uint8_t* b2 = reinterpret_cast<const uint8_t*>(r->core.payload.data());
            Cursor vc{b2 + r->pos, b2 + r->core.payload.size()};
            PyObject* v = decode(r, vc, 0);
            if (!v) { PyErr_Clear(); r->missing_hook = false; damaged = true; break; }
            r->pos = static_cast<size_t>(vc.p - b2);
            r->event++;
            int rc = PyList_Append(values, v);
            Py_DECREF(v);
            if (rc < 0) { failed = true; break; }
        }
        // After its thread's previous event: right before it (its own run),
        // or where the dict says (None: its first).
        PyObject* before = same_as_previous ? PyLong_FromUnsignedLongLong(index)
                                            : Py_XNewRef(PyDict_GetItemWithError(last, tid));
        if (!before && PyErr_Occurred()) failed = true;
        PyObject* at = failed ? nullptr : PyLong_FromUnsignedLongLong(index);
        PyObject* item = at ? PyTuple_Pack(4, at, tid, before ? before : Py_None, values) : nullptr;
        Py_XDECREF(at);
        Py_XDECREF(before);
        Py_DECREF(values);
        if (!item || PyList_Append(out, item) < 0) { Py_XDECREF(item); failed = true; break; }
        Py_DECREF(item);
        if (damaged) break;
    }
    Py_XDECREF(previous);
    Py_XDECREF(last);
    if (failed) {
        Py_XDECREF(out);
        return nullptr;
    }
    PyErr_Clear();  // damage ended the scan: not an error here
    return out;
}

PyObject* Reader_register(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Reader* r = reinterpret_cast<Reader*>(self);
    if (nargs != 2 || !PyUnicode_CheckExact(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "register(name, from_state) needs a str and a callable");
        return nullptr;
    }
    if (PyDict_SetItem(r->hooks, args[0], args[1]) < 0) return nullptr;
    Py_RETURN_NONE;
}

PyObject* Reader_close(PyObject* self, PyObject*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    if (r->fd >= 0) { ::close(r->fd); r->fd = -1; }
    Py_RETURN_NONE;
}

PyObject* Reader_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }
PyObject* Reader_exit(PyObject* self, PyObject*) { Reader_close(self, nullptr); Py_RETURN_FALSE; }

PyObject* get_thread(PyObject* self, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    if (fill(r) < 0) return nullptr;
    return Py_NewRef(r->thread ? r->thread : Py_None);
}

PyObject* get_next_kind(PyObject* self, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    int rc = fill(r);
    if (rc < 0) return nullptr;
    if (rc == 0) Py_RETURN_NONE;
    return PyUnicode_FromString(r->head_kind == K_BINDING ? "binding" : "value");
}

PyObject* get_position(PyObject* self, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    uint64_t offset = r->head_kind ? r->head_offset
                      : r->pos < r->core.payload.size() ? r->payload_offset + r->pos : r->next_offset;
    return PyObject_CallFunction(g.position, "KKK", (unsigned long long)r->frame, (unsigned long long)offset,
                                 (unsigned long long)r->event);
}

// async_next: the head is an asynchronous event's tag, or the index of the
// next event is one of `async_marks` (set by the engine: an asynchronous event
// of the thread that just consumed the event before this index comes later on
// the tape, after other threads' events). Either way a native hand-over takes
// the Python path, which arms the search for the event's position. No cost
// for the fast-path takes: they check the tags only (a mark is always followed
// by another thread's event, so the take already reports the thread left).
PyObject* get_async_next(PyObject* self, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    if (fill(r) < 0) { PyErr_Clear(); Py_RETURN_FALSE; }  // the next read reports the damage
    if (head_is_async(r)) Py_RETURN_TRUE;
    if (!r->async_marks) Py_RETURN_FALSE;
    PyObject* index = PyLong_FromUnsignedLongLong(r->event);
    if (!index) return nullptr;
    int found = PySet_Contains(r->async_marks, index);
    Py_DECREF(index);
    if (found < 0) return nullptr;
    return Py_NewRef(found ? Py_True : Py_False);
}
PyObject* get_async_marks(PyObject* self, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    return Py_NewRef(r->async_marks ? r->async_marks : Py_None);
}
int set_async_marks(PyObject* self, PyObject* value, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    if (value == nullptr || value == Py_None) { Py_CLEAR(r->async_marks); return 0; }
    if (!PyFrozenSet_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "async_marks must be a frozenset of int or None");
        return -1;
    }
    Py_XSETREF(r->async_marks, Py_NewRef(value));
    return 0;
}
PyObject* get_async_tags(PyObject* self, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    return Py_NewRef(r->async_tags ? r->async_tags : Py_None);
}
int set_async_tags(PyObject* self, PyObject* value, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    if (value == nullptr || value == Py_None) { Py_CLEAR(r->async_tags); return 0; }
    if (!PyTuple_CheckExact(value)) { PyErr_SetString(PyExc_TypeError, "async_tags must be a tuple of str or None"); return -1; }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(value); i++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(value, i))) {
            PyErr_SetString(PyExc_TypeError, "async_tags must be a tuple of str or None");
            return -1;
        }
    Py_XSETREF(r->async_tags, Py_NewRef(value));
    return 0;
}
PyObject* get_events(PyObject* self, void*) { return PyLong_FromUnsignedLongLong(reinterpret_cast<Reader*>(self)->event); }
PyObject* get_preamble(PyObject* self, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    return Py_NewRef(r->preamble ? r->preamble : Py_None);
}
PyObject* get_path(PyObject* self, void*) {
    Reader* r = reinterpret_cast<Reader*>(self);
    return Py_NewRef(r->path ? r->path : Py_None);
}

PyObject* Reader_reopen(PyObject* self, PyObject* path);

PyMethodDef reader_methods[] = {
    {"read", Reader_read, METH_NOARGS, "read() -> the next value; EOFError at the clean end."},
    {"bind", Reader_bind, METH_O, "bind(obj): consume the NEW_BINDING at the head and give its handle to obj."},
    {"take_event", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Reader_take_event)), METH_FASTCALL,
     "take_event(thread, tag, accept) -> None | (value, same_thread): `tag value` when accept(value), "
     "or nothing consumed."},
    {"take_call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Reader_take_call)), METH_FASTCALL,
     "take_call(thread, call_tag, name, fp, result_tag, error_tag) -> None | (ok, value, same_thread): "
     "a whole recorded call with its outcome, or nothing consumed."},
    {"scan", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Reader_scan)), METH_FASTCALL,
     "scan(tag, nvalues) -> [(index, thread, after_previous, values)]: every value event equal to tag in the "
     "rest of the tape (a reader nothing was read from), the index after its thread's previous event, and "
     "the values right after it; other values are passed over without being made."},
    {"register", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Reader_register)), METH_FASTCALL,
     "register(name, from_state)"},
    {"reopen", Reader_reopen, METH_O,
     "reopen(path) -> int: continue with another recording (a forked child's); the live bindings carry over."},
    {"close", Reader_close, METH_NOARGS, nullptr},
    {"__enter__", Reader_enter, METH_NOARGS, nullptr},
    {"__exit__", Reader_exit, METH_VARARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef reader_getset[] = {
    {"thread", get_thread, nullptr, "logical thread id of the next value (None before any switch)", nullptr},
    {"next_kind", get_next_kind, nullptr, "'value', 'binding' or None at the end", nullptr},
    {"position", get_position, nullptr, "StreamPosition(frame, offset, event)", nullptr},
    {"events", get_events, nullptr, nullptr, nullptr},
    {"async_tags", get_async_tags, set_async_tags, "tags of asynchronous events (None: no check)", nullptr},
    {"async_next", get_async_next, nullptr,
     "the head is an asynchronous event (a tag in async_tags), or events is one of async_marks", nullptr},
    {"async_marks", get_async_marks, set_async_marks,
     "event indices where a thread's later asynchronous event is announced (None: none)", nullptr},
    {"preamble", get_preamble, nullptr, nullptr, nullptr},
    {"path", get_path, nullptr, nullptr, nullptr},
    {"native_take_event", get_native_take_event, nullptr,
     "take_event as a C call: a capsule (utils/cpp/native_take.h), for utils' replayed lock acquires", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyObject* Reader_new(PyTypeObject* type, PyObject*, PyObject*) {
    Reader* r = reinterpret_cast<Reader*>(type->tp_alloc(type, 0));
    if (!r) return nullptr;
    new (&r->core) RCore();
    r->fd = -1;
    r->hooks = PyDict_New();
    if (!r->hooks) { Py_DECREF(r); return nullptr; }
    return reinterpret_cast<PyObject*>(r);
}

int Reader_init(PyObject* self, PyObject* args, PyObject* kwds) {
    Reader* r = reinterpret_cast<Reader*>(self);
    static const char* kwlist[] = {"path", nullptr};
    PyObject* fspath;
    if (r->fd >= 0 || r->preamble) { PyErr_SetString(PyExc_RuntimeError, "StreamReader already initialised"); return -1; }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:StreamReader", const_cast<char**>(kwlist), PyUnicode_FSConverter, &fspath))
        return -1;
    Py_XSETREF(r->path, PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(fspath)));
    int fd;
    const char* cpath = PyBytes_AS_STRING(fspath);
    Py_BEGIN_ALLOW_THREADS
    fd = ::open(cpath, O_RDONLY | O_CLOEXEC);
    Py_END_ALLOW_THREADS
    Py_DECREF(fspath);
    if (fd < 0) { PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, r->path); return -1; }
    r->fd = fd;
    struct stat st;
    if (fstat(fd, &st) < 0) { PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, r->path); return -1; }
    r->file_size = static_cast<uint64_t>(st.st_size);
    uint8_t head[HEADER_SIZE];
    ssize_t n = pread_full(fd, head, HEADER_SIZE, 0);
    if (n < 0) { PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, r->path); return -1; }
    if (n < 8 || std::memcmp(head, MAGIC, 8) != 0) {
        raise_format(r, "bad magic: not a retrace recording", 0, 0,
                     "check the path; this file was not written by retracesoftware");
        return -1;
    }
    if (n < static_cast<ssize_t>(HEADER_SIZE)) {
        raise_format(r, "file ends inside the header", n, 0, "the recording is empty; re-record");
        return -1;
    }
    uint32_t version;
    std::memcpy(&version, head + 8, 4);
    if (version < OLDEST_READABLE_VERSION || version > FORMAT_VERSION) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "format version %u, this retracesoftware reads version %u", version, FORMAT_VERSION);
        raise_format(r, msg, 8, 0, "use the retracesoftware version that made the recording");
        return -1;
    }
    r->next_offset = HEADER_SIZE;
    int more = next_frame(r, true);
    if (more < 0) return -1;
    if (!more) {
        raise_format(r, "no preamble frame", HEADER_SIZE, 0, "the recording is empty; re-record");
        return -1;
    }
    const uint8_t* base = reinterpret_cast<const uint8_t*>(r->core.payload.data());
    Cursor c{base, base + r->core.payload.size()};
    PyObject* pre = decode(r, c, 0);
    if (!pre || c.p != c.end || !PyDict_CheckExact(pre)) {
        Py_XDECREF(pre);
        PyErr_Clear();
        raise_format(r, "bad preamble (preamble frame is not exactly one map)", r->payload_offset, 0,
                     "the recording is damaged; re-record");
        return -1;
    }
    r->preamble = pre;
    for (PyObject* s : r->core.strings) Py_DECREF(s);
    r->core.strings.clear();  // the preamble does not intern
    r->core.payload.clear();
    r->pos = 0;
    return 0;
}

int Reader_traverse(PyObject* self, visitproc visit, void* arg) {
    Reader* r = reinterpret_cast<Reader*>(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(r->hooks);
    Py_VISIT(r->head);
    Py_VISIT(r->thread);
    for (auto& kv : r->core.bindings) Py_VISIT(kv.second);
    return 0;
}

int Reader_clear(PyObject* self) {
    Reader* r = reinterpret_cast<Reader*>(self);
    Py_CLEAR(r->hooks);
    Py_CLEAR(r->head);
    r->head_kind = K_NONE;
    Py_CLEAR(r->thread);
    for (auto& kv : r->core.bindings) Py_DECREF(kv.second);
    r->core.bindings.clear();
    return 0;
}

void Reader_dealloc(PyObject* self) {
    Reader* r = reinterpret_cast<Reader*>(self);
    PyTypeObject* tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Reader_clear(self);
    for (PyObject* s : r->core.strings) Py_DECREF(s);
    if (r->fd >= 0) ::close(r->fd);
    Py_CLEAR(r->path);
    Py_CLEAR(r->preamble);
    Py_CLEAR(r->error);
    Py_CLEAR(r->async_tags);
    Py_CLEAR(r->async_marks);
    r->core.~RCore();
    tp->tp_free(self);
    Py_DECREF(tp);
}

PyObject* Reader_iter(PyObject* self) { return Py_NewRef(self); }

PyType_Slot reader_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(Reader_new)},
    {Py_tp_init, reinterpret_cast<void*>(Reader_init)},
    {Py_tp_dealloc, reinterpret_cast<void*>(Reader_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(Reader_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(Reader_clear)},
    {Py_tp_iter, reinterpret_cast<void*>(Reader_iter)},
    {Py_tp_iternext, reinterpret_cast<void*>(Reader_next)},
    {Py_tp_methods, reader_methods},
    {Py_tp_getset, reader_getset},
    {Py_tp_doc, const_cast<char*>("StreamReader(path)\n\nReads a recording event by event (docs/FORMAT.md).")},
    {0, nullptr},
};

// Continue with the recording at `path` (a forked child's, written by
// StreamWriter.reopen): a fresh reader's state is swapped in (hooks stay),
// and the objects still bound here take its first k NEW_BINDING markers in
// binding order. Returns k.
PyObject* Reader_reopen(PyObject* self, PyObject* path) {
    Reader* r = reinterpret_cast<Reader*>(self);
    PyObject* fresh = PyObject_CallOneArg(reinterpret_cast<PyObject*>(Py_TYPE(self)), path);
    if (!fresh) return nullptr;
    Reader* n = reinterpret_cast<Reader*>(fresh);
    std::vector<std::pair<uint64_t, PyObject*>> live(r->core.bindings.begin(), r->core.bindings.end());
    std::sort(live.begin(), live.end());
    for (auto& b : live) Py_INCREF(b.second);
    std::swap(r->core, n->core);
    std::swap(r->path, n->path);
    std::swap(r->preamble, n->preamble);
    std::swap(r->thread, n->thread);
    std::swap(r->head, n->head);
    std::swap(r->error, n->error);
    std::swap(r->fd, n->fd);
    std::swap(r->head_kind, n->head_kind);
    std::swap(r->missing_hook, n->missing_hook);
    std::swap(r->head_offset, n->head_offset);
    std::swap(r->pos, n->pos);
    std::swap(r->payload_offset, n->payload_offset);
    std::swap(r->next_offset, n->next_offset);
    std::swap(r->file_size, n->file_size);
    std::swap(r->frame, n->frame);
    std::swap(r->event, n->event);
    std::swap(r->next_binding, n->next_binding);
    Py_CLEAR(r->async_marks);    // event indices of the parent's recording
    Py_DECREF(fresh);  // releases the old state
    size_t i = 0;
    for (; i < live.size(); i++) {
        int rc = fill(r);
        if (rc < 0) break;
        if (rc == 0 || r->head_kind != K_BINDING) {
            uint64_t off = r->head_kind ? r->head_offset : r->next_offset;
            char msg[160];
            std::snprintf(msg, sizeof msg, "the recording does not start with the %zu bindings inherited "
                          "from its parent (found %zu)", live.size(), i);
            raise_format(r, msg, off, r->frame, "it is not this parent's child recording");
            break;
        }
        Py_CLEAR(r->head);
        r->head_kind = K_NONE;
        r->core.bindings[r->next_binding++] = live[i].second;  // steals the reference
        r->event++;
    }
    if (i < live.size()) {
        for (size_t j = i; j < live.size(); j++) Py_DECREF(live[j].second);
        return nullptr;
    }
    return PyLong_FromSize_t(live.size());
}

}  // namespace

PyObject* make_reader_type(PyObject* module) {
    static PyType_Spec spec = {
        "retracesoftware.stream._stream.StreamReader", sizeof(Reader), 0,
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, reader_slots,
    };
    PyObject* type = PyType_FromModuleAndSpec(module, &spec, nullptr);
    // Borrowed: the module keeps the type for the life of the process.
    if (type) ReaderType = reinterpret_cast<PyTypeObject*>(type);
    return type;
}

}  // namespace retrace_stream
