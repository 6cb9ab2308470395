"""The 'Reading without our code' sample of docs/FORMAT.md, run as printed."""
import os
import re

import pytest

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "FORMAT.md")


def _sample():
    if not os.path.exists(DOC):
        pytest.skip("docs/ not next to the tests")
    text = open(DOC, encoding="utf-8").read()
    section = text[text.index("## Reading without our code"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_format_sample_reads_every_event(impl, tmp_path):
    path = str(tmp_path / "r.bin")
    w = impl.StreamWriter(path, {"argv": ["prog"]}, compress=False)
    for i in range(300):
        w.write("CALL", "posix.read", i, "RESULT", b"x" * (i % 7))
    w.close()
    namespace = {}
    exec(compile(_sample(), DOC, "exec"), namespace)
    values = list(namespace["raw_events"](path))
    preamble, events = values[0], values[1:]
    assert preamble[b"argv"] == [b"prog"]
    r = impl.StreamReader(path)
    count = sum(1 for _ in r)
    assert count == 1500 and len(events) >= count     # plus the thread switch markers
    assert events.count(b"posix.read") + sum(1 for e in events if getattr(e, "code", None) == 6) >= 1
