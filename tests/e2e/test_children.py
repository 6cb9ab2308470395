"""Child processes (issue 8, docs/CHILDREN.md): os.fork children and
subprocess / multiprocessing children running this Python are recorded too,
reachable from the one recording path; replaying the parent reproduces what
it got from them and what they printed on the shared stdout; --pid replays
one child; inspect lists them."""
import json
import os
import re
import sys

import pytest

from retrace_testing import assert_faithful, run

from retracesoftware import utils

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _children(s):
    d = s.dir / (s.recording.name + ".children")
    return sorted(d.glob("*.bin")) if d.is_dir() else []


def _inspect(s):
    r = run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording), "--json"], s.dir)
    assert r.returncode == 0, r.err
    return json.loads(r.stdout)


FORK = """
    import os, random, time
    print("parent before", random.random(), flush=True)
    pid = os.fork()
    if pid == 0:
        print("child", random.random(), time.time(), os.urandom(4).hex(), flush=True)
        os._exit(5)
    _, status = os.waitpid(pid, 0)
    print("parent after", os.waitstatus_to_exitcode(status), random.random(), time.time())
"""


def test_fork_child_and_parent_print(scenario):
    s = scenario(FORK)
    rec = assert_faithful(s, replays=2)
    assert rec.out.count("child ") == 1
    assert len(_children(s)) == 1


def test_fork_child_exits_normally_and_forks_again(scenario):
    # The child returns to the program (normal exit, atexit, flush) and forks
    # a grandchild of its own; the parent waits with os.wait().
    s = scenario("""
        import os, random, sys
        print("top", random.random(), flush=True)
        if os.fork() == 0:
            print("child", random.random(), flush=True)
            g = os.fork()
            if g == 0:
                print("grandchild", random.random(), flush=True)
                sys.exit(3)
            print("child reaped", os.waitstatus_to_exitcode(os.waitpid(g, 0)[1]), flush=True)
            sys.exit(2)
        pid, status = os.wait()
        print("parent reaped", os.waitstatus_to_exitcode(status), random.random())
    """)
    rec = assert_faithful(s)
    assert rec.out.index("grandchild") < rec.out.index("child reaped") < rec.out.index("parent reaped")
    assert len(_children(s)) == 2


def test_subprocess_run_captures_childs_random_output(scenario):
    s = scenario("""
        import subprocess, sys, random
        r = subprocess.run([sys.executable, "kid.py", "a"], capture_output=True, text=True)
        print("captured", r.returncode, r.stdout.strip(), r.stderr.strip())
        print("parent", random.random())
    """)
    s.write("kid.py", """
        import os, random, sys
        print("kid", sys.argv[1:], random.random())
        print("err", os.urandom(2).hex(), file=sys.stderr)
        sys.exit(4)
    """)
    assert_faithful(s, replays=2)
    assert len(_children(s)) == 1


def test_subprocess_child_inherits_stdout(scenario):
    s = scenario("""
        import subprocess, sys, random
        print("parent first", random.random(), flush=True)
        code = subprocess.call([sys.executable, "kid.py", "inherit"])
        print("parent after", code, random.random())
    """)
    s.write("kid.py", """
        import random, sys, time
        print("kid prints", sys.argv[1:], random.random(), time.time())
        sys.exit(6)
    """)
    rec = assert_faithful(s, replays=2)
    assert rec.out.index("parent first") < rec.out.index("kid prints") < rec.out.index("parent after")


def test_multiprocessing_fork_process(scenario):
    s = scenario("""
        import multiprocessing as mp, random

        def work(n):
            print("worker", n, random.random(), flush=True)

        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            for i in range(2):
                p = ctx.Process(target=work, args=(i,))
                p.start()
                p.join()
                print("joined", i, p.exitcode, flush=True)
            print("parent", random.random())
    """)
    rec = assert_faithful(s)
    assert rec.out.count("worker") == 2
    assert len(_children(s)) == 2


def test_multiprocessing_fork_pool_map(scenario):
    s = scenario("""
        import multiprocessing as mp, random, os

        def work(n):
            return n, random.random()

        if __name__ == "__main__":
            pool = mp.get_context("fork").Pool(2)
            print(sorted(pool.map(work, range(4))))
            pool.close()
            pool.join()
            print("parent", random.random())
    """)
    assert_faithful(s)
    assert len(_children(s)) == 2


def test_multiprocessing_spawn_process(scenario):
    # A spawn child is `python [-B ...] -c "from multiprocessing.spawn import
    # spawn_main; ..." --multiprocessing-fork` with pipes passed by fd: it
    # records itself (its interpreter options go to the interpreter running
    # retrace), and the parent's replay replays it, so what it prints is
    # reproduced.
    s = scenario("""
        import multiprocessing as mp, random

        def work(n, q):
            print("worker", n, random.random(), flush=True)
            q.put((n, random.random()))

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            for i in range(2):
                p = ctx.Process(target=work, args=(i, q))
                p.start()
                got = q.get()
                p.join()   # the replay waits for the child's replay here: output in recorded order
                print("joined", i, p.exitcode, got, flush=True)
            print("parent", random.random())
    """)
    rec = assert_faithful(s, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert rec.out.count("worker") == 2
    assert len(_children(s)) >= 2


def test_pool_workers_terminated_by_the_pool_replay_their_output(scenario):
    # `with Pool()` ends with terminate(): SIGTERM to workers blocked waiting
    # for work. Their recordings are flushed before they die (C++ backend),
    # so their replays print what they printed, and end quietly.
    s = scenario("""
        import multiprocessing as mp, signal

        def work(x):
            print("child", x, flush=True)
            return x * x

        if __name__ == "__main__":
            print(signal.getsignal(signal.SIGTERM))
            for method in ("fork", "spawn"):
                with mp.get_context(method).Pool(2) as pool:
                    print(sorted(pool.map(work, range(4))), flush=True)
            print("done")
    """)
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    rec = s.record(env=env)
    assert rec.returncode == 0, rec.err
    assert rec.out.count("child") == 8 and "done" in rec.out, rec.out
    plain = s.plain(env=env)
    assert rec.out.splitlines()[0] == plain.out.splitlines()[0]   # SIGTERM still reads as default
    for _ in range(2):
        rep = s.replay(env=env)
        assert rep.returncode == 0, rep.err
        assert "retrace: error" not in rep.err, rep.err
        if utils.BACKEND == "cpp":
            # (processes' writes may interleave differently, even within a line)
            assert rep.out.count("child") == 8, rep.out + rep.err
            assert rep.out.count("[0, 1, 4, 9]") == 2 and "done" in rep.out, rep.out + rep.err
        else:   # workers killed with events still buffered: their tail is lost
            assert "done" in rep.out, rep.out + rep.err


def test_pid_replays_one_child(scenario):
    s = scenario("""
        import os, random, subprocess, sys
        print("parent", random.random(), flush=True)
        pid = os.fork()
        if pid == 0:
            print("forked child", random.random(), flush=True)
            os._exit(9)
        os.waitpid(pid, 0)
        subprocess.run([sys.executable, "kid.py"])
        print("parent end", random.random())
    """)
    s.write("kid.py", """
        import random, sys
        print("kid", random.random())
        sys.exit(4)
    """)
    rec = assert_faithful(s)
    info = _inspect(s)
    kinds = {c["kind"]: c for c in info["children"]}
    assert set(kinds) == {"fork", "subprocess"}
    forked_line = next(line for line in rec.out.splitlines() if line.startswith("forked child"))
    kid_line = next(line for line in rec.out.splitlines() if line.startswith("kid"))

    one = s.replay("--pid", str(kinds["fork"]["pid"]))
    assert one.out == forked_line + "\n", one.err
    assert one.returncode == 9, one.err
    one = s.replay("--pid", str(kinds["subprocess"]["pid"]))
    assert one.out == kid_line + "\n", one.err
    assert one.returncode == 4, one.err
    main = s.replay("--pid", str(info["pid"]))
    assert main.stdout == rec.stdout

    bad = s.replay("--pid", "1")
    assert bad.returncode == 2 and "no process 1" in bad.err


def test_inspect_lists_the_processes(scenario):
    s = scenario(FORK)
    s.write("kid.py", "print('kid')\n")
    s.script.write_text(s.script.read_text() + "import subprocess, sys\nsubprocess.run([sys.executable, 'kid.py'])\n")
    rec = s.record()
    assert rec.returncode == 0, rec.err
    info = _inspect(s)
    assert info["pid"] and len(info["children"]) == 2
    fork, sub = info["children"]
    assert fork["kind"] == "fork" and fork["parent_pid"] == info["pid"] and fork["exit_code"] == 5
    assert sub["kind"] == "subprocess" and sub["argv"] == ["kid.py"] and sub["exit_code"] == 0
    text = run([sys.executable, "-m", "retracesoftware", "inspect", str(s.recording)], s.dir).out
    assert "processes:  3" in text
    assert re.search(rf"pid {fork['pid']}: forked by {info['pid']}, \d+ events, exit code 5", text), text
    assert f"pid {sub['pid']}: subprocess of {info['pid']}, python kid.py" in text


def test_other_executables_are_not_spawned_on_replay(scenario):
    # A child that is not this Python is data: replay spawns nothing (it
    # would leave a marker file); a python child is replayed, never re-run
    # for real (its own file writes are recorded, so no marker either).
    s = scenario("""
        import subprocess, sys, random
        out = subprocess.run(["/bin/sh", "-c", "touch marker-sh; echo sh $$"], capture_output=True).stdout
        print(out.split()[0], random.random())
        subprocess.run([sys.executable, "kid.py"])
    """)
    s.write("kid.py", """
        import os, random
        open("marker-py", "w").close()
        print("kid", random.random())
    """)
    rec = assert_faithful(s)
    assert "kid" in rec.out
    for marker in s.dir.glob("marker-*"):
        marker.unlink()
    rep = s.replay()
    assert rep.stdout == rec.stdout, rep.err
    assert not list(s.dir.glob("marker-*")), "replay ran a child for real"


def test_parent_killed_keeps_childrens_recordings(scenario):
    # The child finishes and exits; the parent is SIGKILLed afterwards:
    # the child's recording is complete and replays on its own.
    s = scenario("""
        import os, random, signal
        pid = os.fork()
        if pid == 0:
            print("child", random.random(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    rec = s.record()
    assert rec.returncode == -9
    info = _inspect(s)
    (child,) = info["children"]
    assert child["complete"] and child["exit_code"] == 0
    one = s.replay("--pid", str(child["pid"]))
    assert one.stdout == rec.stdout and one.returncode == 0, one.err


PTY_FORKS = """
    import os, pty, random, sys

    def drain(fd):
        data = b""
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:       # EIO: the child's side is closed
                return data
            if not chunk:
                return data
            data += chunk

    # pty.fork (os.forkpty inside): the child's stdout is the terminal
    pid, fd = pty.fork()
    if pid == 0:
        print("pty child", random.random(), os.isatty(1), flush=True)
        os._exit(7)
    got = drain(fd)
    print("parent got", got.replace(b"\\r\\n", b"\\n"), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    os.close(fd)

    # os.forkpty + exec, as pexpect/ptyprocess spawn: closerange of every
    # inherited descriptor, an error pipe, exec (the other program is data)
    for program in ("/bin/sh", "/nonexistent"):
        r, w = os.pipe()
        pid, fd = os.forkpty()
        if pid == 0:
            os.closerange(3, w)
            os.closerange(w + 1, 4096)
            os.set_inheritable(w, False)
            try:
                os.execv(program, [program, "-c", "touch marker-exec; echo exec $$"])
            except OSError as err:
                os.write(w, b"OSError:%d %f" % (err.errno, random.random()))
                os._exit(os.EX_OSERR)
        os.close(w)
        error = os.read(r, 100)
        os.close(r)
        got = drain(fd)
        print(program, error, got.split()[:1], os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]),
              random.random())
        os.close(fd)
"""


@pytest.mark.skipif(not hasattr(os, "forkpty"), reason="needs os.forkpty")
def test_pty_fork_forkpty_and_exec_children(scenario):
    # Every fork goes through the same handling: os.forkpty (pty.fork,
    # pexpect) made the child write into its parent's recording ("this
    # StreamWriter belongs to process …"). The exec'd program is data: it
    # never runs on replay (no marker file), and closerange in the child
    # does not cut its recording short.
    s = scenario(PTY_FORKS)
    rec = assert_faithful(s)
    assert "pty child" in rec.out and "True" in rec.out, rec.out
    assert "OSError:2" in rec.out and "b'exec'" in rec.out, rec.out
    assert "retrace:" not in rec.out + rec.err, rec.err
    assert len(_children(s)) == 3
    for marker in s.dir.glob("marker-*"):
        marker.unlink()
    rep = s.replay()
    assert rep.stdout == rec.stdout and rep.returncode == rec.returncode, rep.err
    assert not list(s.dir.glob("marker-*")), "replay ran the exec'd program for real"


CHILD_SEEDS = """
import os, subprocess, sys
code = ("import os, sys; print(os.environ.get('PYTHONHASHSEED'), os.environ.get('RETRACE_PINNED_HASHSEED'), "
        "hash('abc'), sorted({'x', 'y', 'z', 'w'}))")
for env in (None, dict(os.environ, EXTRA="1")):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
    print(out.strip())
pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code], dict(os.environ))
print(os.waitpid(pid, 0)[1])
"""


def test_children_start_with_a_seed_of_ours_and_never_see_it(scenario):
    """A recorded child of this Python is given a hash seed (and our mark)
    by its parent's record, and its recorded seed by its parent's replay, so
    neither restarts itself to pin one (one interpreter start per child);
    its program sees the environment it was given, without them."""
    s = scenario(CHILD_SEEDS)
    rec = assert_faithful(s)
    lines = rec.out.splitlines()
    assert [l.split()[:2] for l in lines[:2]] == [["None", "None"]] * 2, rec.out
    from retracesoftware.__main__ import recorded_hash_seed
    children = sorted((s.dir / "run.bin.children").rglob("*.bin"))
    assert len(children) >= 2
    for child in children:
        assert recorded_hash_seed(str(child)) is not None
        from retracesoftware.stream import StreamReader
        reader = StreamReader(str(child))
        try:
            assert reader.preamble["options"]["hash_seed_pinned_by_retrace"] is True
        finally:
            reader.close()


def test_the_seed_given_to_a_child_keeps_one_the_environment_sets():
    from retracesoftware.children import _HASHSEED_MARK, _seeded_env, _seeded_env_list
    mark = _HASHSEED_MARK.encode()
    made = _seeded_env_list([b"A=1", mark + b"=stale"])
    seeds = [e for e in made if e.startswith(b"PYTHONHASHSEED=")]
    assert len(seeds) == 1 and (mark + b"=" + seeds[0].split(b"=")[1]) in made and mark + b"=stale" not in made
    assert b"A=1" in made and 1 <= int(seeds[0].split(b"=")[1]) < 2**32
    inherited = _seeded_env_list(None)            # this process's environment, plus ours
    assert any(e.startswith(b"PATH=") for e in inherited) and any(e.startswith(mark + b"=") for e in inherited)
    assert _seeded_env_list([b"PYTHONHASHSEED=7"]) == [b"PYTHONHASHSEED=7"]
    spawned = _seeded_env({"A": "1"})
    assert spawned["PYTHONHASHSEED"] == spawned[_HASHSEED_MARK] and spawned["A"] == "1"
    assert _seeded_env({"PYTHONHASHSEED": "0"}) == {"PYTHONHASHSEED": "0"}


def test_a_forked_child_killed_before_its_first_frame_replays_as_nothing(scenario):
    """A forked child killed between creating its recording and writing the
    bindings it inherited (a pool worker terminated as it started) leaves a
    preamble and no event: its replay ends quietly, as it did nothing, and
    the parent replays what it saw of it."""
    s = scenario("""
        import os, time
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        print(os.waitpid(pid, 0)[1] >> 8, time.time())
    """)
    rec = s.record()
    assert rec.returncode == 0, rec.err
    children = sorted((s.dir / "run.bin.children").glob("*.bin"))
    assert len(children) == 1
    data = children[0].read_bytes()
    preamble_end = 20 + int.from_bytes(data[12:16], "little")
    assert len(data) > preamble_end
    children[0].write_bytes(data[:preamble_end])        # as if killed right after the preamble
    rep = s.replay()
    assert (rep.returncode, rep.out) == (0, rec.out), rep.err
    assert "retrace: error" not in rep.err
