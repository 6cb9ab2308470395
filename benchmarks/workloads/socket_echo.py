"""A socket echo server (a thread) and a client on loopback: N messages of
random bytes, each echoed back and checked; prints a digest."""
import hashlib
import os
import socket
import sys
import threading

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000


def recv_exactly(sock, size):
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("peer closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(listener):
    conn, _ = listener.accept()
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(1)
thread = threading.Thread(target=serve, args=(listener,))
thread.start()
digest = hashlib.sha256()
with socket.create_connection(listener.getsockname()) as client:
    for _ in range(n):
        message = os.urandom(32)
        client.sendall(message)
        echoed = recv_exactly(client, len(message))
        if echoed != message:
            raise SystemExit("echo mismatch")
        digest.update(echoed)
thread.join()
listener.close()
print(f"{n} echoes, digest {digest.hexdigest()}")
