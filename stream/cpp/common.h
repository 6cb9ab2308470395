// Shared pieces of the _stream extension: the output buffer, msgpack
// primitives, CRC-32, and the module state (references into
// retracesoftware.stream._common, which both backends share).
#pragma once
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <string>
#include <vector>

namespace retrace_stream {

// Format constants: keep in step with stream/_common.py and docs/FORMAT.md.
constexpr char MAGIC[8] = {'\x89', 'R', 'T', 'R', 'C', '\r', '\n', '\x1a'};
constexpr uint32_t FORMAT_VERSION = 2;
constexpr uint32_t OLDEST_READABLE_VERSION = 1;  // version 1 = version 2 with no compressed frame
// A frame length with this bit set: the payload is one zstd frame holding the events.
constexpr uint32_t FRAME_COMPRESSED = 0x80000000u;
constexpr size_t MAX_DECOMPRESSED = size_t(1) << 30;  // larger = damage, not a reason to allocate
constexpr size_t HEADER_SIZE = 12;
constexpr size_t FRAME_HEADER_SIZE = 8;
enum : int8_t {
    EXT_TUPLE = 1, EXT_BIGINT = 2, EXT_SET = 3, EXT_FROZENSET = 4, EXT_STR_DEF = 5,
    EXT_STR_REF = 6, EXT_NEW_BINDING = 7, EXT_HANDLE = 8, EXT_BINDING_DELETE = 9,
    EXT_THREAD_SWITCH = 10, EXT_OBJECT = 11, EXT_HOOK = 12,
};
constexpr Py_ssize_t INTERN_MIN = 4, INTERN_MAX = 64;
constexpr size_t INTERN_LIMIT = 1u << 16;
constexpr int MAX_DEPTH = 512;

// Module state: borrowed-for-life references (the module keeps them).
struct ModuleState {
    PyObject* reduce_value = nullptr;
    PyObject* rebuild_value = nullptr;
    PyObject* unrecordable = nullptr;
    PyObject* format_error = nullptr;
    PyObject* forked_error = nullptr;
    PyObject* track_writer = nullptr;
    PyObject* bigint_bytes = nullptr;
    PyObject* type_name = nullptr;
    PyObject* position = nullptr;
    PyObject* recording_error = nullptr;
    PyObject* recording_format_error = nullptr;
    // Bumped by thread_ids_changed(): every writer's per-thread cache of the
    // logical thread id (cache_thread_id=True) is stale. Written with the GIL.
    uint64_t thread_epoch = 1;
    uint64_t next_writer_serial = 1;
};
extern ModuleState g;

// A growable byte buffer with cheap appends (the encoder's hot path).
struct Out {
    char* data = nullptr;
    size_t size = 0;
    size_t cap = 0;
    Out() = default;
    Out(const Out&) = delete;
    Out& operator=(const Out&) = delete;
    ~Out() { std::free(data); }
    void swap(Out& o) noexcept {
        std::swap(data, o.data); std::swap(size, o.size); std::swap(cap, o.cap);
    }
    // Returns false (no exception set) when memory runs out.
    bool grow(size_t need) {
        size_t ncap = cap ? cap : 256;
        while (ncap < size + need) ncap *= 2;
        char* nd = static_cast<char*>(std::realloc(data, ncap));
        if (!nd) return false;
        data = nd; cap = ncap;
        return true;
    }
    inline bool reserve(size_t n) { return size + n <= cap || grow(n); }
    inline void put1(uint8_t b) { data[size++] = static_cast<char>(b); }
    inline void put_be16(uint16_t v) { put1(v >> 8); put1(v & 0xff); }
    inline void put_be32(uint32_t v) { uint32_t b = __builtin_bswap32(v); std::memcpy(data + size, &b, 4); size += 4; }
    inline void put_be64(uint64_t v) { uint64_t b = __builtin_bswap64(v); std::memcpy(data + size, &b, 8); size += 8; }
    inline void put(const void* p, size_t n) { std::memcpy(data + size, p, n); size += n; }
};

uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);

// msgpack ext header for a payload of `len` bytes; returns its length (<= 6).
inline size_t ext_header(uint8_t* dst, size_t len, int8_t code) {
    switch (len) {
    case 1: dst[0] = 0xd4; dst[1] = code; return 2;
    case 2: dst[0] = 0xd5; dst[1] = code; return 2;
    case 4: dst[0] = 0xd6; dst[1] = code; return 2;
    case 8: dst[0] = 0xd7; dst[1] = code; return 2;
    case 16: dst[0] = 0xd8; dst[1] = code; return 2;
    }
    if (len < 0x100) { dst[0] = 0xc7; dst[1] = len; dst[2] = code; return 3; }
    if (len < 0x10000) { dst[0] = 0xc8; dst[1] = len >> 8; dst[2] = len & 0xff; dst[3] = code; return 4; }
    dst[0] = 0xc9; dst[1] = len >> 24; dst[2] = (len >> 16) & 0xff; dst[3] = (len >> 8) & 0xff;
    dst[4] = len & 0xff; dst[5] = code; return 6;
}

}  // namespace retrace_stream
