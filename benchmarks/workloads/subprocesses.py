"""A few subprocess.run([sys.executable, '-c', ...]) calls whose output is
random; prints what the children printed."""
import subprocess
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
code = "import os, random; print(random.random(), os.urandom(4).hex(), os.getpid() > 0)"
for i in range(n):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    print(i, done.stdout.strip())
