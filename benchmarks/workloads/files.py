"""Many small file writes and reads in a fresh temporary directory.

Each file gets random content; the program reads every file back, lists the
directory, stats the files, and prints a digest; the directory is removed.
"""
import hashlib
import os
import random
import shutil
import sys
import tempfile

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
root = tempfile.mkdtemp(prefix="retrace-bench-files-")
try:
    for i in range(n):
        with open(os.path.join(root, f"f{i:06d}.txt"), "w") as f:
            f.write(f"{i} {random.random()!r} {random.getrandbits(64):x}\n")
    digest = hashlib.sha256()
    names = sorted(os.listdir(root))
    size = 0
    for name in names:
        path = os.path.join(root, name)
        with open(path) as f:
            digest.update(f.read().encode())
        size += os.stat(path).st_size
    print(f"{len(names)} files, {size} bytes, digest {digest.hexdigest()}")
finally:
    shutil.rmtree(root)
