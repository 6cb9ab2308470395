// zstd through the system's libzstd.so.1, loaded at run time (dlopen): no
// build-time dependency (Debian's libzstd1 is installed wherever apt is),
// and the pure-Python backend loads the very same library through ctypes
// (stream/_zstd.py), so both backends compress to the same bytes.
#pragma once
#include <cstddef>
#include <string>

namespace retrace_stream::zstd {

constexpr int LEVEL = 3;  // keep in step with stream/_zstd.py

// True when libzstd could be loaded (thread-safe, loads once).
bool available();

// A compression context; owned by one writer, used under its io lock.
struct Compressor {
    void* cctx = nullptr;
    Compressor() = default;
    Compressor(const Compressor&) = delete;
    Compressor& operator=(const Compressor&) = delete;
    ~Compressor();
    // Compresses src into dst (resized); false when zstd is unavailable or failed.
    bool compress(const char* src, size_t n, std::string& dst);
};

// Decompressed size recorded in a zstd frame, or (size_t)-1 if unknown/bad.
size_t content_size(const void* src, size_t n);
// Decompresses exactly `cap` bytes into dst; false (with msg) on failure.
bool decompress(const void* src, size_t n, char* dst, size_t cap, const char** msg);

}  // namespace retrace_stream::zstd
