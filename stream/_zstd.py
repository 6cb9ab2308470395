"""zstd for the pure-Python backend: the system's libzstd.so.1 through ctypes.

The C++ backend loads the very same library with dlopen (stream/cpp/zstd.cpp),
so both backends compress a frame to the same bytes (tests/stream checks the
files are byte-identical). Decompression falls back to the ``zstandard``
package when the library cannot be loaded (any zstd decoder gives the same
bytes back). Loaded lazily: ``ctypes`` is imported the first time a frame is
compressed or decompressed (on the flusher thread when recording), never at
start-up. ctypes releases the GIL during each call.
"""
from __future__ import annotations

from _thread import allocate_lock as _allocate_lock

#: Compression level; keep in step with stream/cpp/zstd.h.
LEVEL = 3
#: A decompressed frame larger than this is taken as damage.
MAX_DECOMPRESSED = 1 << 30

_lock = _allocate_lock()
_lib = None      # the loaded CDLL, False when it cannot be loaded
_zstandard = None


def _load():
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        try:
            import ctypes
            try:
                lib = ctypes.CDLL("libzstd.so.1")
            except OSError:
                import ctypes.util
                name = ctypes.util.find_library("zstd")
                if not name:
                    raise
                lib = ctypes.CDLL(name)
            sz = ctypes.c_size_t
            lib.ZSTD_compressBound.argtypes = [sz]
            lib.ZSTD_compressBound.restype = sz
            lib.ZSTD_isError.argtypes = [sz]
            lib.ZSTD_isError.restype = ctypes.c_uint
            lib.ZSTD_getErrorName.argtypes = [sz]
            lib.ZSTD_getErrorName.restype = ctypes.c_char_p
            lib.ZSTD_createCCtx.argtypes = []
            lib.ZSTD_createCCtx.restype = ctypes.c_void_p
            lib.ZSTD_freeCCtx.argtypes = [ctypes.c_void_p]
            lib.ZSTD_freeCCtx.restype = sz
            lib.ZSTD_compressCCtx.argtypes = [ctypes.c_void_p, ctypes.c_char_p, sz, ctypes.c_char_p,
                                              sz, ctypes.c_int]
            lib.ZSTD_compressCCtx.restype = sz
            lib.ZSTD_getFrameContentSize.argtypes = [ctypes.c_char_p, sz]
            lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
            lib.ZSTD_decompress.argtypes = [ctypes.c_char_p, sz, ctypes.c_char_p, sz]
            lib.ZSTD_decompress.restype = sz
            lib._retrace_buf = ctypes.create_string_buffer
            _lib = lib
        except (OSError, AttributeError, ImportError):
            _lib = False
        return _lib


def available() -> bool:
    """True when libzstd can be loaded (so this process writes compressed frames)."""
    return bool(_load())


class Compressor:
    """One compression context (used by one writer under its io lock)."""

    def __init__(self):
        self._cctx = None
        # Load the library (and resolve its functions) now: a writer is made
        # before the boundary is installed, and function pointers resolved
        # later would be the recorded foreign calls of install/foreign.py
        # (a fork's flush in the program's thread put them on its tape).
        _load()

    def compress(self, data) -> bytes | None:
        """zstd frame of *data*, or None when libzstd is unavailable or fails."""
        lib = _load()
        if not lib:
            return None
        if self._cctx is None:
            self._cctx = lib.ZSTD_createCCtx()
            if not self._cctx:
                return None
        data = bytes(data)
        cap = lib.ZSTD_compressBound(len(data))
        out = lib._retrace_buf(cap)
        n = lib.ZSTD_compressCCtx(self._cctx, out, cap, data, len(data), LEVEL)
        if lib.ZSTD_isError(n):
            return None
        return out.raw[:n]

    def __del__(self):
        lib = _lib
        if self._cctx and lib:
            lib.ZSTD_freeCCtx(self._cctx)
            self._cctx = None


def decompress(data) -> bytes:
    """The events of one compressed frame. ValueError on damage, LookupError
    when no zstd decoder is available."""
    global _zstandard
    data = bytes(data)
    lib = _load()
    if lib:
        size = lib.ZSTD_getFrameContentSize(data, len(data))
        if size >= 0xFFFFFFFFFFFFFFFE or size > MAX_DECOMPRESSED:
            raise ValueError("no valid zstd content size")
        out = lib._retrace_buf(max(size, 1))
        n = lib.ZSTD_decompress(out, size, data, len(data))
        if lib.ZSTD_isError(n):
            raise ValueError(lib.ZSTD_getErrorName(n).decode("ascii", "replace"))
        if n != size:
            raise ValueError("decompressed size differs from the frame's content size")
        return out.raw[:n]
    if _zstandard is None:
        try:
            import zstandard
            _zstandard = zstandard
        except ImportError:
            _zstandard = False
    if not _zstandard:
        raise LookupError("compressed frame, but neither libzstd (libzstd.so.1) nor the zstandard "
                          "package is available")
    try:
        return _zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_DECOMPRESSED)
    except _zstandard.ZstdError as e:
        raise ValueError(str(e)) from None
