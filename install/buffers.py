"""Calls that fill a buffer the caller owns, adapted to calls that return bytes.

``sock.recv_into(buf)`` hands the external code a buffer to write into and
returns only a count. The boundary records results, not side effects on the
caller's memory, so on replay the buffer would stay empty. Instead, for a
bound object (or under retrace, for a function), the ``*_into`` call is made
as its bytes-returning sibling through the boundary — ``recv``,
``recvfrom``, ``recvmsg``, ``os.read``/``os.pread``, ``_ssl._SSLSocket.read``
— and the returned bytes are copied into the buffer here, in program code,
which runs identically in record and replay. Argument checking mirrors
CPython's so that errors are the same too.

A config names the buffer-filling method (``methods = ["recv_into"]`` for
``_socket.socket``); the installer looks it up in `METHOD_ADAPTERS` /
`FUNCTION_ADAPTERS` and installs the adapter instead of a plain gateway.
"""
from __future__ import annotations

from retracesoftware.install import boundary as _boundary


def _byte_view(buffer):
    view = memoryview(buffer)
    if view.readonly:
        raise TypeError(f"recv_into() argument 'buffer' must be read-write bytes-like object, "
                        f"not {type(buffer).__name__}")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _size(view, nbytes, what):
    if nbytes < 0:
        raise ValueError(f"negative buffersize in {what}")
    if nbytes == 0:
        nbytes = len(view)
    elif len(view) < nbytes:
        raise ValueError(f"buffer too small for requested bytes")
    return nbytes


def _fill(view, data):
    n = len(data)
    view[:n] = data
    return n


# ------------------------------------------------------------------ sockets
def socket_recv_into(recv):
    def recv_into(self, buffer, nbytes=0, flags=0):
        with _byte_view(buffer) as view:
            return _fill(view, recv(self, _size(view, nbytes, "recv_into"), flags))
    return recv_into


def socket_recvfrom_into(recvfrom):
    def recvfrom_into(self, buffer, nbytes=0, flags=0):
        with _byte_view(buffer) as view:
            data, address = recvfrom(self, _size(view, nbytes, "recvfrom_into"), flags)
            return _fill(view, data), address
    return recvfrom_into


def socket_recvmsg_into(recvmsg):
    def recvmsg_into(self, buffers, ancbufsize=0, flags=0):
        views = [_byte_view(b) for b in buffers]
        try:
            data, ancdata, msg_flags, address = recvmsg(self, sum(len(v) for v in views),
                                                        ancbufsize, flags)
            offset = 0
            for view in views:
                part = data[offset:offset + len(view)]
                view[:len(part)] = part
                offset += len(part)
            return len(data), ancdata, msg_flags, address
        finally:
            for view in views:
                view.release()
    return recvmsg_into


# ---------------------------------------------------------------------- ssl
def ssl_read(read):
    """``_ssl._SSLSocket.read(len, buffer=None)``: with a buffer, read bytes and copy."""
    def ssl_read_method(self, length=1024, buffer=None):
        if buffer is None:
            return read(self, length)
        with _byte_view(buffer) as view:
            if length <= 0 or length > len(view):
                length = len(view)
            return _fill(view, read(self, length))
    return ssl_read_method


#: (module, type) -> {method: (bytes-returning sibling, adapter factory)}.
#: The sibling is patched as a boundary method (it must be, for bound
#: objects); the factory gets that *patched* sibling. Declared in
#: configs/handlers/boundary.toml [method_adapters].
METHOD_ADAPTERS = _boundary.METHOD_ADAPTERS


# ---------------------------------------------------------------- functions
def os_readv(read):
    def readv(fd, buffers, /):
        views = [_byte_view(b) for b in buffers]
        try:
            data = read(fd, sum(len(v) for v in views))
            offset = 0
            for view in views:
                part = data[offset:offset + len(view)]
                view[:len(part)] = part
                offset += len(part)
            return len(data)
        finally:
            for view in views:
                view.release()
    return readv


def os_preadv(pread):
    def preadv(fd, buffers, offset, flags=0, /):
        views = [_byte_view(b) for b in buffers]
        try:
            data = pread(fd, sum(len(v) for v in views), offset)
            at = 0
            for view in views:
                part = data[at:at + len(view)]
                view[:len(part)] = part
                at += len(part)
            return len(data)
        finally:
            for view in views:
                view.release()
    return preadv


#: (module, function) -> (bytes-returning sibling in the same module, adapter
#: factory). Declared in configs/handlers/boundary.toml [function_adapters].
FUNCTION_ADAPTERS = _boundary.FUNCTION_ADAPTERS
