"""mmap of a file: its bytes are recorded when it is mapped (install/mmaps.py)."""
from retrace_testing import assert_faithful


def test_file_mmap_contents_replay(scenario):
    s = scenario("""
import mmap, os, random, tempfile
data = bytes(random.randrange(256) for _ in range(300))
with tempfile.TemporaryFile() as f:
    f.write(data)
    f.flush()
    m = mmap.mmap(f.fileno(), 0)
    print(len(m), m[:8].hex(), m[100:108].hex(), m.find(data[50:54]) >= 0)
    m[0:2] = b"zz"
    print(m[:4])
    m.close()
anon = mmap.mmap(-1, 16)
anon.write(b"anonymous")
print(anon[:9])
""")
    assert_faithful(s)


def test_multiprocessing_value_and_array(scenario):
    s = scenario("""
import multiprocessing as mp, random
v = mp.Value("i", 0)
a = mp.Array("d", 4)
for i in range(4):
    a[i] = random.random()
v.value += 5
print(v.value, list(a))
""")
    assert_faithful(s)
