// fingerprint(*args, **kwargs) -> int: CRC-32 (zlib's polynomial) of a byte
// encoding of the arguments.  The encoding is the contract shared with
// utils/_python.py (_fp_encode); both backends must produce the same number.
//
//   top:    'A' u32(nargs) enc(arg)...   then, if kwargs: 'K' u32(n) (enc(key) enc(value))...
//   None 'N' | True 'T' | False 'F'
//   int    'I' i64            (fits in 64 bits)  |  'J' u64(bit_length) u64(low 64 bits) u8(negative)
//   float  'D' f64
//   str    'S' u32(len) first 64 code points as UTF-32-LE (surrogates kept)
//   bytes  'B' u32(len) first 64 bytes, then (len > 64) u32(CRC-32 of the rest):
//          every byte a program writes to a file, socket or pipe is checked
//          (bytearray and C-contiguous memoryview hash as the bytes they hold:
//          buffered writers hand os.write a memoryview of their buffer)
//   tuple  'U' / list 'L'  u32(len) enc(first 16 items)   (depth < 3, else as "other")
//   other  'O' type.__name__ (UTF-8) '\0'
// All integers little-endian.  Subclasses of int/float/str/bytes/tuple/list
// hash by their base value.

#include "utils.h"

#include <array>
#include <cstring>
#include <string>

namespace retrace::utils {

namespace {

constexpr size_t PREFIX = 64;
constexpr Py_ssize_t ITEMS = 16;
constexpr int MAX_DEPTH = 3;

constexpr std::array<uint32_t, 256> make_crc_table() {
    std::array<uint32_t, 256> table{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
        table[i] = c;
    }
    return table;
}
constexpr auto CRC_TABLE = make_crc_table();

uint32_t crc32(const std::string& data) {
    uint32_t c = 0xFFFFFFFFu;
    for (unsigned char byte : data) c = CRC_TABLE[(c ^ byte) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

void put_u32(std::string& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// 'B' u32(n), the first PREFIX bytes, and the CRC-32 of the rest when longer.
void put_bytes(std::string& out, const char* p, Py_ssize_t n) {
    out.push_back('B');
    put_u32(out, static_cast<uint32_t>(n));
    size_t len = static_cast<size_t>(n);
    size_t head = len < PREFIX ? len : PREFIX;
    out.append(p, head);
    if (len > PREFIX) {
        uint32_t c = 0xFFFFFFFFu;
        const unsigned char* q = reinterpret_cast<const unsigned char*>(p);
        for (size_t i = PREFIX; i < len; ++i) c = CRC_TABLE[(c ^ q[i]) & 0xFF] ^ (c >> 8);
        put_u32(out, c ^ 0xFFFFFFFFu);
    }
}
void put_u64(std::string& out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// Returns false with a Python exception set.
bool encode(PyObject* x, int depth, std::string& out) {
    if (x == Py_None) {
        out.push_back('N');
    } else if (x == Py_True) {
        out.push_back('T');
    } else if (x == Py_False) {
        out.push_back('F');
    } else if (PyLong_Check(x)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
        if (v == -1 && PyErr_Occurred()) return false;
        if (!overflow) {
            out.push_back('I');
            put_u64(out, static_cast<uint64_t>(v));
        } else {
            // Rare: ints beyond 64 bits.  bit_length via the method (no private API).
            PyObject* bits = PyObject_CallMethod(x, "bit_length", nullptr);
            if (!bits) return false;
            unsigned long long nbits = PyLong_AsUnsignedLongLong(bits);
            Py_DECREF(bits);
            if (nbits == static_cast<unsigned long long>(-1) && PyErr_Occurred()) return false;
            unsigned long long low = PyLong_AsUnsignedLongLongMask(x);
            if (low == static_cast<unsigned long long>(-1) && PyErr_Occurred()) return false;
            out.push_back('J');
            put_u64(out, nbits);
            put_u64(out, low);
            out.push_back(overflow < 0 ? 1 : 0);
        }
    } else if (PyFloat_Check(x)) {
        double d = PyFloat_AS_DOUBLE(x);
        uint64_t bits;
        std::memcpy(&bits, &d, sizeof bits);
        out.push_back('D');
        put_u64(out, bits);
    } else if (PyUnicode_Check(x)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(x);
        out.push_back('S');
        put_u32(out, static_cast<uint32_t>(n));
        int kind = PyUnicode_KIND(x);
        const void* data = PyUnicode_DATA(x);
        Py_ssize_t m = n < static_cast<Py_ssize_t>(PREFIX) ? n : static_cast<Py_ssize_t>(PREFIX);
        for (Py_ssize_t i = 0; i < m; ++i) put_u32(out, PyUnicode_READ(kind, data, i));
    } else if (PyBytes_Check(x)) {
        put_bytes(out, PyBytes_AS_STRING(x), PyBytes_GET_SIZE(x));
    } else if (PyByteArray_Check(x)) {
        put_bytes(out, PyByteArray_AS_STRING(x), PyByteArray_GET_SIZE(x));
    } else if (PyMemoryView_Check(x) && PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(x), 'C')) {
        const Py_buffer* view = PyMemoryView_GET_BUFFER(x);
        put_bytes(out, static_cast<const char*>(view->buf), view->len);
    } else if ((PyTuple_Check(x) || PyList_Check(x)) && depth < MAX_DEPTH) {
        bool is_tuple = PyTuple_Check(x);
        Py_ssize_t n = is_tuple ? PyTuple_GET_SIZE(x) : PyList_GET_SIZE(x);
        out.push_back(is_tuple ? 'U' : 'L');
        put_u32(out, static_cast<uint32_t>(n));
        for (Py_ssize_t i = 0; i < n && i < ITEMS; ++i) {
            // A list cannot change under us: encode() runs no Python code for
            // list items except int.bit_length, which cannot touch the list.
            if (!is_tuple && i >= PyList_GET_SIZE(x)) break;
            PyObject* item = is_tuple ? PyTuple_GET_ITEM(x, i) : PyList_GET_ITEM(x, i);
            Py_INCREF(item);
            bool ok = encode(item, depth + 1, out);
            Py_DECREF(item);
            if (!ok) return false;
        }
    } else {
        // type.__name__ == the part of tp_name after the last dot, for static
        // and heap types alike.
        const char* name = Py_TYPE(x)->tp_name;
        const char* dot = std::strrchr(name, '.');
        out.push_back('O');
        out.append(dot ? dot + 1 : name);
        out.push_back('\0');
    }
    return true;
}

PyObject* fingerprint(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return fingerprint_vector(args, nargs, kwnames);
}

PyMethodDef fingerprint_def = {
    "fingerprint", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fingerprint)),
    METH_FASTCALL | METH_KEYWORDS,
    "fingerprint(*args, **kwargs) -> int: deterministic 32-bit hash of call arguments (see utils/README.md)"};

}  // namespace

PyObject* fingerprint_vector(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    // No reserve(): short encodings (no or few small arguments, the common
    // case) stay in std::string's inline buffer, without a heap allocation.
    std::string out;
    out.push_back('A');
    put_u32(out, static_cast<uint32_t>(nargs));
    for (Py_ssize_t i = 0; i < nargs; ++i)
        if (!encode(args[i], 0, out)) return nullptr;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nkw) {
        out.push_back('K');
        put_u32(out, static_cast<uint32_t>(nkw));
        for (Py_ssize_t i = 0; i < nkw; ++i) {
            if (!encode(PyTuple_GET_ITEM(kwnames, i), 0, out)) return nullptr;
            if (!encode(args[nargs + i], 0, out)) return nullptr;
        }
    }
    return PyLong_FromUnsignedLong(crc32(out));
}

int init_fingerprint(PyObject* module) {
    PyObject* fn = PyCFunction_NewEx(&fingerprint_def, nullptr, nullptr);
    if (!fn) return -1;
    if (PyModule_AddObject(module, "fingerprint", fn) < 0) {
        Py_DECREF(fn);
        return -1;
    }
    return 0;
}

}  // namespace retrace::utils
