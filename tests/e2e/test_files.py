"""Files and the file system: data read at record comes from the recording at
replay; writes never touch the disk on replay."""
import os

from retrace_testing import assert_faithful


def test_read_data_file_deleted_before_replay(scenario):
    s = scenario("""
        import random
        with open("data.txt") as f:
            lines = f.read().splitlines()
        print(len(lines), random.choice(lines))
    """)
    data = s.write("data.txt", "\n".join(f"line {i}" for i in range(100)) + "\n")
    assert_faithful(s, before_replay=data.unlink)


def test_write_file_not_touched_on_replay(scenario):
    s = scenario("""
        import time, os
        with open("out.txt", "w") as f:
            f.write(f"written {time.time()}\\n")
        with open("out.txt") as f:
            print(f.read().strip(), os.path.getsize("out.txt"))
        os.remove("out.txt")
    """)
    rec = assert_faithful(s, check_plain_differs=True)
    marker = s.dir / "out.txt"
    marker.write_text("untouched")
    rep = s.replay()
    assert rep.stdout == rec.stdout, rep.err
    assert marker.read_text() == "untouched", "replay wrote or removed a real file"


def test_binary_files_and_seek(scenario):
    s = scenario("""
        import os
        blob = os.urandom(5000)
        with open("blob.bin", "wb") as f:
            f.write(blob)
        with open("blob.bin", "rb") as f:
            f.seek(1000)
            part = f.read(16)
            print(part.hex(), f.tell())
        with open("blob.bin", "r+b") as f:
            f.seek(0, 2); print(f.tell())
    """)
    assert_faithful(s)


def test_listdir_stat_scandir(scenario):
    s = scenario("""
        import os, random, pathlib
        name = f"f{random.randint(0, 10**9)}.txt"
        pathlib.Path(name).write_text("x" * random.randint(1, 100))
        print(sorted(os.listdir(".")))
        st = os.stat(name); print(st.st_size, st.st_mtime_ns)
        print(sorted((e.name, e.is_file()) for e in os.scandir(".")))
        print(os.path.exists(name), os.path.isdir("."))
        os.unlink(name)
    """)
    assert_faithful(s)


def test_tempfile(scenario):
    s = scenario("""
        import tempfile, os
        with tempfile.NamedTemporaryFile("w+", delete=True) as f:
            f.write("hello"); f.flush(); f.seek(0)
            print(os.path.basename(f.name), f.read())
        d = tempfile.mkdtemp(); print(os.path.basename(d)); os.rmdir(d)
    """)
    assert_faithful(s)


def test_pathlib_read_text(scenario):
    s = scenario("""
        import pathlib, random
        p = pathlib.Path("numbers.txt")
        words = p.read_text().split()
        print([words[random.randint(0, 99)] for _ in range(8)])
    """)
    data = s.write("numbers.txt", " ".join(str(i * 7) for i in range(100)))
    assert_faithful(s, before_replay=data.unlink)


def test_finalizer_closing_descriptors_after_the_replay_ended(scenario):
    # A finalizer that runs at interpreter exit (after the replay ended)
    # closes descriptors whose numbers came from the recording: on replay
    # that must not touch this process's descriptors (no EBADF noise).
    s = scenario("""
        import os, random
        class Pipe:
            def __init__(self):
                self.r, self.w = os.pipe()
            def __del__(self):
                os.close(self.r)
                os.close(self.w)
        keep = [Pipe() for _ in range(3)]
        print(random.random(), [p.r for p in keep][:1] != [None])
    """)
    assert_faithful(s)
    rep = s.replay()
    assert "Exception ignored" not in rep.err and "Bad file descriptor" not in rep.err, rep.err
