"""subprocess: children's output, exit codes and pids come from the recording;
replay spawns nothing (the child would leave a marker file)."""
from stdlib_support import assert_offline_faithful

CHILD = """
    import os, sys, random
    open(f"marker-{os.getpid()}", "w").close()
    data = sys.stdin.read() if "--stdin" in sys.argv else ""
    print("child", random.random(), data.upper())
    print("to stderr", os.urandom(3).hex(), file=sys.stderr)
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
"""


# Markers are deleted after recording; a child spawned by the replay would
# make one again, which the offline replay check reports as a touched file.
DELETE = ["child.py", "marker-*"]


def _markers(s):
    return sorted(p.name for p in s.dir.glob("marker-*"))


def test_run_capture_output(scenario):
    s = scenario("""
        import subprocess, sys
        r = subprocess.run([sys.executable, "child.py", "3"], capture_output=True, text=True)
        print(r.returncode, r.stdout.strip(), r.stderr.strip())
        r = subprocess.run([sys.executable, "child.py", "--stdin"], input=b"fed in", stdout=subprocess.PIPE)
        print(r.returncode, r.stdout)
    """)
    s.write("child.py", CHILD)
    assert_offline_faithful(s, delete=DELETE)
    assert not _markers(s), "replay spawned a child"


def test_popen_communicate_and_pid(scenario):
    s = scenario("""
        import subprocess, sys, os
        p = subprocess.Popen([sys.executable, "child.py", "--stdin"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(b"hello child", timeout=60)
        print(p.pid > 0, p.returncode, out, err.split()[0])
        print("pid recorded:", p.pid)
        q = subprocess.Popen([sys.executable, "child.py", "7"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT)
        print(q.poll() in (None, 7), q.wait(), q.returncode)
    """)
    s.write("child.py", CHILD)
    assert_offline_faithful(s, delete=DELETE)
    assert not _markers(s), "replay spawned a child"


def test_check_output_and_errors(scenario):
    s = scenario("""
        import subprocess, sys
        print(subprocess.check_output([sys.executable, "child.py"], stderr=subprocess.DEVNULL))
        try:
            subprocess.check_call([sys.executable, "child.py", "5"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        except subprocess.CalledProcessError as exc:
            print("failed with", exc.returncode)
        try:
            subprocess.run(["/nonexistent/program-xyz"])
        except FileNotFoundError as exc:
            print("not found", exc.errno)
        print(subprocess.getoutput(f"{sys.executable} -c 'import os; print(os.urandom(4).hex())'"))
    """)
    s.write("child.py", CHILD)
    assert_offline_faithful(s, delete=DELETE)
    assert not _markers(s), "replay spawned a child"


def test_os_system_and_popen(scenario):
    s = scenario("""
        import os, sys
        code = os.system(f"{sys.executable} child.py 2 > /dev/null 2>&1")
        print(os.waitstatus_to_exitcode(code))
        with os.popen(f"{sys.executable} child.py 2>/dev/null") as f:
            print(f.read().strip())
    """)
    s.write("child.py", CHILD)
    assert_offline_faithful(s, delete=DELETE)
    assert not _markers(s), "replay spawned a child"
