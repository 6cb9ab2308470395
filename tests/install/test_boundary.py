"""The boundary in one index: configs/handlers/boundary.toml names every
special case's handler, the installer takes its tables from it, `python -m
retracesoftware boundary` prints it with the module configs, and
docs/COMPATIBILITY.md agrees with it."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

from retracesoftware.install import boundary, buffers, installer

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "COMPATIBILITY.md"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "retracesoftware", "boundary", *args],
                          capture_output=True, text=True, timeout=120)


def test_every_handler_resolves():
    refs = [v.ref for v in boundary.SUBSTITUTES.values()] + [v.ref for v in boundary.HIDDEN_TYPES.values()]
    refs += [f.ref for _, f in boundary.FUNCTION_ADAPTERS.values()]
    refs += [f.ref for methods in boundary.METHOD_ADAPTERS.values() for _, f in methods.values()]
    refs += [a["handler"] for a in boundary.AREAS.values()]
    assert refs
    for ref in refs:
        assert boundary.handler(ref) is not None, ref
    assert boundary.HIDDEN_TYPES[("posix", "ScandirIterator")]().__name__ == "ScandirIterator"


def test_the_installer_and_buffers_use_the_index():
    assert installer._SUBSTITUTES is boundary.SUBSTITUTES
    assert installer._HIDDEN_TYPES is boundary.HIDDEN_TYPES
    assert installer._INERT_AFTER_REPLAY is boundary.INERT_AFTER_REPLAY
    assert installer._INSTANCE_CALLBACKS is boundary.INSTANCE_CALLBACKS
    assert installer.NATIVE_IO is boundary.NATIVE_IO
    assert buffers.FUNCTION_ADAPTERS is boundary.FUNCTION_ADAPTERS
    assert buffers.METHOD_ADAPTERS is boundary.METHOD_ADAPTERS
    assert ("posix", "close") in boundary.INERT_AFTER_REPLAY
    assert boundary.INSTANCE_CALLBACKS[("_sqlite3", "Connection", "create_aggregate")] == ("step", "finalize")
    assert boundary.METHOD_ADAPTERS[("_socket", "socket")]["recv_into"][0] == "recv"


def test_the_listing_says_how_each_special_case_is_recorded():
    out = _cli()
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert re.search(r"^  recorded  time\.time$", text, re.M), text[:2000]
    assert re.search(r"^  recorded  select\.poll  \[substitute retracesoftware\.install\.polling:make_poll[];]",
                     text, re.M)
    assert re.search(r"^  recorded  posix\.close  \[inert after replay\]$", text, re.M)
    assert re.search(r"^    method  recv_into  \[adapter via recv ", text, re.M)
    assert "threads: retracesoftware.install.thread_support" in text
    assert "pycurl (pycurl)" in text
    grep = _cli("--grep", "urandom")
    assert grep.returncode == 0 and "posix" in grep.stdout.splitlines()[0]
    assert all("urandom" in line or not line.startswith(" ") for line in grep.stdout.splitlines())


def test_the_json_listing():
    out = _cli("--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["substitutes"] == {"select.poll": "retracesoftware.install.polling:make_poll"}
    assert "posix" in data["modules"] and data["modules"]["posix"].endswith("os.toml")


def _doc_native_io_rows():
    if not DOC.exists():
        pytest.skip("docs/COMPATIBILITY.md is not in this tree (installed package only)")
    text = DOC.read_text()
    section = text[text.index("## C extensions that do their own I/O"):]
    section = section.split("\n## ", 1)[0]     # up to the next section
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| library")
            and not line.startswith("|---")]


def test_compatibility_doc_lists_every_native_io_library_and_no_other():
    rows = _doc_native_io_rows()
    for module, (dist, _, entry_points) in boundary.NATIVE_IO.items():
        row = [r for r in rows if re.search(rf"\b{re.escape(dist)}\b", r.split("|")[1])]
        assert row, f"docs/COMPATIBILITY.md has no row for {dist} ({module})"
        for entry in entry_points:
            assert entry.split(".")[0] in row[0], (dist, entry, row[0])
    dists = {d for d, _, _ in boundary.NATIVE_IO.values()}
    for r in rows:
        names = re.split(r"\s*/\s*|\s+", r.split("|")[1].strip())
        assert any(n in dists for n in names), f"docs/COMPATIBILITY.md row not in [native_io]: {r}"


def test_compatibility_doc_names_only_existing_configs():
    if not DOC.exists():
        pytest.skip("docs/COMPATIBILITY.md is not in this tree (installed package only)")
    from retracesoftware.install.config import shipped_config_dir
    for name in re.findall(r"configs/(\w+)\.toml", DOC.read_text()):
        assert (shipped_config_dir() / f"{name}.toml").is_file(), name


def test_one_undo_stack_for_the_system_and_the_installer():
    """A type patched by System.patch_type and then by the installer's patch
    API is restored newest first, by one stack (the System's)."""
    from retracesoftware.install.installer import Installer
    from retracesoftware.proxy import MemoryWriter, System

    class Thing:
        def read(self):
            return "real read"

        def size(self):
            return 1

    original_read, original_size = Thing.__dict__["read"], Thing.__dict__["size"]
    system = System("record", writer=MemoryWriter())
    inst = Installer(system, None)
    system.patch_type(Thing, ["read"], constructor=False)
    patched_read = Thing.__dict__["read"]
    inst.patch(Thing, "read", lambda self: "adapter over " + patched_read(self), is_type=True)
    inst.patch(Thing, "size", lambda self: 2, is_type=True)
    steps = []
    inst.on_uninstall(lambda: steps.append(Thing.__dict__["read"] is original_read))
    assert Thing().size() == 2 and Thing().read() == "adapter over real read"
    inst.uninstall()
    assert steps == [False]          # newest first: ran before the patches were undone
    assert Thing.__dict__["read"] is original_read and Thing.__dict__["size"] is original_size
