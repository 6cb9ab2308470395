"""Buffers hash by content: a BufferedWriter hands os.write a memoryview, and
a replay writing other bytes must not look like the same call."""
import pytest


@pytest.fixture(params=["python", "cpp"])
def fp(request):
    if request.param == "python":
        from retracesoftware.utils import _python as impl
    else:
        impl = pytest.importorskip("retracesoftware.utils._utils")
    return impl.fingerprint


def test_memoryview_and_bytearray_hash_like_bytes(fp):
    data = b"1795468916.5357473"
    assert fp(memoryview(data)) == fp(data)
    assert fp(bytearray(data)) == fp(data)
    assert fp(memoryview(data)) != fp(memoryview(b"1795468916.5568318"))
    assert fp(memoryview(bytearray(b"x" * 100))[10:90]) == fp(b"x" * 80)


def test_backends_agree_on_buffers():
    from retracesoftware.utils import _python
    cpp = pytest.importorskip("retracesoftware.utils._utils")
    for value in (memoryview(b"abc"), bytearray(b"q" * 70), memoryview(bytearray(200))[5:], (memoryview(b"z"),)):
        assert cpp.fingerprint(value) == _python.fingerprint(value)


def test_non_contiguous_memoryview_hashes_by_type(fp):
    view = memoryview(b"abcdef")[::2]
    assert fp(view) == fp(memoryview(b"xyz")[::2])
