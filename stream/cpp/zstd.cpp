// See zstd.h. The few libzstd entry points we use, resolved with dlsym.
#include <string>

#include "zstd.h"

#include <dlfcn.h>
#include <mutex>

namespace retrace_stream::zstd {

namespace {

struct Api {
    size_t (*compressBound)(size_t) = nullptr;
    unsigned (*isError)(size_t) = nullptr;
    const char* (*getErrorName)(size_t) = nullptr;
    void* (*createCCtx)() = nullptr;
    size_t (*freeCCtx)(void*) = nullptr;
    size_t (*compressCCtx)(void*, void*, size_t, const void*, size_t, int) = nullptr;
    unsigned long long (*getFrameContentSize)(const void*, size_t) = nullptr;
    size_t (*decompress)(void*, size_t, const void*, size_t) = nullptr;
    bool ok = false;
};

// Loaded once for the process and never changed afterwards (read-only state).
const Api& api() {
    static Api a;
    static std::once_flag once;
    std::call_once(once, [] {
        void* h = ::dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!h) h = ::dlopen("libzstd.so", RTLD_NOW | RTLD_LOCAL);
        if (!h) return;
        auto sym = [h](auto& fn, const char* name) {
            fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(h, name));
            return fn != nullptr;
        };
        a.ok = sym(a.compressBound, "ZSTD_compressBound") && sym(a.isError, "ZSTD_isError") &&
               sym(a.getErrorName, "ZSTD_getErrorName") && sym(a.createCCtx, "ZSTD_createCCtx") &&
               sym(a.freeCCtx, "ZSTD_freeCCtx") && sym(a.compressCCtx, "ZSTD_compressCCtx") &&
               sym(a.getFrameContentSize, "ZSTD_getFrameContentSize") &&
               sym(a.decompress, "ZSTD_decompress");
    });
    return a;
}

}  // namespace

bool available() { return api().ok; }

Compressor::~Compressor() {
    if (cctx) api().freeCCtx(cctx);
}

bool Compressor::compress(const char* src, size_t n, std::string& dst) {
    const Api& a = api();
    if (!a.ok) return false;
    if (!cctx) cctx = a.createCCtx();
    if (!cctx) return false;
    dst.resize(a.compressBound(n));
    size_t r = a.compressCCtx(cctx, dst.data(), dst.size(), src, n, LEVEL);
    if (a.isError(r)) return false;
    dst.resize(r);
    return true;
}

size_t content_size(const void* src, size_t n) {
    const Api& a = api();
    if (!a.ok) return static_cast<size_t>(-1);
    unsigned long long s = a.getFrameContentSize(src, n);
    if (s >= 0xFFFFFFFFFFFFFFFEull) return static_cast<size_t>(-1);  // unknown / error
    return static_cast<size_t>(s);
}

bool decompress(const void* src, size_t n, char* dst, size_t cap, const char** msg) {
    const Api& a = api();
    if (!a.ok) { *msg = "libzstd is not available"; return false; }
    size_t r = a.decompress(dst, cap, src, n);
    if (a.isError(r)) { *msg = a.getErrorName(r); return false; }
    if (r != cap) { *msg = "decompressed size differs from the frame's content size"; return false; }
    return true;
}

}  // namespace retrace_stream::zstd
