"""``python -m retracesoftware --recording PATH --test NODEID [--pdb]``:
replay a recorded pytest session (``pytest --retrace-record``) for one test.

* Which process: the recording's test reports (marked on each tape by
  install/pytest_session.py) say which process ran NODEID — the session
  itself, or the xdist worker whose recording is a child of it (as if
  ``--pid`` named it).
* Without ``--pdb`` the whole session replays with its stdout kept aside,
  and only NODEID's report section is printed, byte for byte as pytest
  printed it (an xdist worker prints no report: its replay renders the
  section the controller showed from the worker's own report).
* With ``--pdb`` the replay stops at the first line of the test function,
  in a debugger talking to the terminal (pytest's output capture, replayed,
  never sees it).
"""
from __future__ import annotations

import os
import re
import sys

from retracesoftware.runner import UsageError
from retracesoftware.utils.isolate import isolate_module

# Private references, taken before anything is patched.
# Private copies taken at import, before any patch (utils/isolate.py).
_real_os = isolate_module(os)
_dup2 = os.dup2
_open = open
_write_stderr = sys.stderr.write


def _scratch_fd() -> int:
    """A file of our own for the replay's stdout, made without the tempfile
    module (its state — the cached temp dir, the name generator — is the
    program's: making it here would take away calls the recording made)."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        try:
            return memfd("retrace-test-output")
        except OSError:
            pass
    path = f"/tmp/retrace-test-output-{os.getpid()}"
    fd = _real_os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    _real_os.unlink(path)
    return fd


def _matches(recorded: str, given: str) -> bool:
    return recorded == given or recorded.endswith("/" + given)


def resolve(opts) -> None:
    """Pick the process that ran ``opts.test`` (sets ``opts.pid`` for an
    xdist worker) and the recorded nodeid; UsageError if no process did."""
    from retracesoftware.children import processes
    from retracesoftware.install import pytest_session

    given = opts.test
    candidates = [(None, opts.recording)]
    if opts.pid is None:
        candidates += [(p["pid"], p["path"]) for p in processes(opts.recording) if p["kind"] == "subprocess"]
    else:
        from retracesoftware.children import locate
        candidates = [(opts.pid, locate(opts.recording, opts.pid)[0])]
    known = []
    delegated = None
    for pid, path in candidates:
        reports = pytest_session.tests_in(path)
        for nodeid, outcome, worker in pytest_session.outcomes(reports):
            if not _matches(nodeid, given):
                known.append(nodeid)
                continue
            ran_here = any(r["nodeid"] == nodeid and r["when"] == "call" for r in reports)
            own = all(r["worker"] in (None, _own_worker(reports)) for r in reports if r["nodeid"] == nodeid)
            if pid is None and not own:
                delegated = nodeid     # the controller saw it; a worker ran it
                continue
            if ran_here or pid is not None or own:
                pytest_session.replay_test = nodeid
                if pid is not None:
                    opts.pid = pid
                    opts.vouched_code = _xdist_bootstrap(path)
                return
    if delegated is not None:
        raise UsageError(f"test {given} ran in an xdist worker whose recording is missing from "
                         f"{opts.recording}.children — copy the whole recording directory")
    sample = ", ".join(sorted(set(known))[:5]) or "none"
    raise UsageError(f"the recording has no test {given} (tests: {sample}{', ...' if len(set(known)) > 5 else ''}) "
                     f"— list them with python -m retracesoftware inspect {opts.recording}")


def _xdist_bootstrap(path: str) -> str | None:
    """The ``-c`` code of an xdist worker's recording when it is exactly the
    bootstrap line the execnet installed here passes to a worker (else None).

    A worker runs ``python -c CODE`` (execnet's popen gateway), and a
    recording of ``-c`` code only replays under ``--trust``
    (retracesoftware/record_replay.py): the code would be the recording's. Replayed
    as a child of the whole session, the replaying controller vouches for it
    (children.py: it passes exactly that code now); ``--test`` replays the
    worker alone, so the controller's part is done here: the code must be
    the line this machine's execnet would pass. execnet is read, not
    imported (an import now would take its source events from the program)."""
    import ast
    import importlib.util
    from retracesoftware.children import read_preamble
    target = (read_preamble(path) or {}).get("target")
    if not isinstance(target, dict) or target.get("kind") != "code":
        return None
    try:
        spec = importlib.util.find_spec("execnet")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    source = os.path.join(list(spec.submodule_search_locations)[0], "gateway_io.py")
    try:
        with _open(source, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "popen_bootstrapline"
                and isinstance(node.value, ast.Constant) and node.value.value == target.get("value")):
            return node.value.value
    return None


def exit_code(code: int) -> int:
    """``--test``'s exit code: the session's (pytest's) for the session
    itself; an xdist worker's process exits 0 whatever its tests did, so its
    replay exits as pytest did for that test (1 when it failed)."""
    from retracesoftware.install import pytest_session
    if pytest_session.rendered_section is None or code != 0:
        return code
    return 1 if pytest_session.seen.get(pytest_session.replay_test) == "failed" else 0


def _own_worker(reports):
    """The worker id a worker's own reports carry (None in the controller
    or a session without xdist)."""
    workers = {r["worker"] for r in reports}
    return workers.pop() if len(workers) == 1 else None


class _Capture:
    def __init__(self):
        self.saved_stdout = None
        self.tmp = None


_capture = _Capture()


def begin(opts, session) -> None:
    """Before the program runs: stdout set aside, the debugger factory, and
    (registered before the session's own close, so it runs after it) the
    printing of the test's section at exit."""
    import atexit
    from retracesoftware.install import pytest_session

    sys.stdout.flush()
    real_in = _real_os.dup(0) if opts.pdb else None
    _capture.saved_stdout = _real_os.dup(1)
    _capture.tmp = _scratch_fd()
    _dup2(_capture.tmp, 1)
    pytest_session.replay_pdb = bool(opts.pdb)
    if opts.pdb:
        terminal_in = _open(real_in, "r", closefd=False)
        terminal_out = _open(_real_os.dup(_capture.saved_stdout), "w", closefd=True)

        def make_debugger():
            from retracesoftware.utils import DISABLED
            import pdb
            gate = session.system.gate
            previous = gate.swap(DISABLED)
            try:
                debugger = pdb.Pdb(stdin=terminal_in, stdout=terminal_out)
                debugger.use_rawinput = False
                _keep_linecache_of_program(debugger)
                return debugger
            finally:
                gate.phase = previous
        pytest_session.make_debugger = make_debugger
    atexit.register(finish)


def _keep_linecache_of_program(debugger) -> None:
    """The debugger reads source lines through linecache, whose cache is the
    program's too: a traceback the test formats later would find lines the
    recording had to stat and read. What an interaction adds is dropped."""
    import linecache
    interaction = debugger.interaction

    def interaction_leaving_linecache(*args, **kwargs):
        before = dict(linecache.cache)
        try:
            return interaction(*args, **kwargs)
        finally:
            linecache.cache.clear()
            linecache.cache.update(before)
    debugger.interaction = interaction_leaving_linecache


def finish() -> None:
    from retracesoftware.install import pytest_session
    try:
        sys.stdout.flush()
    except Exception:
        pass
    if _capture.saved_stdout is None:
        return
    _dup2(_capture.saved_stdout, 1)
    _real_os.close(_capture.saved_stdout)
    _capture.saved_stdout = None
    fd = _capture.tmp
    _real_os.lseek(fd, 0, 0)
    chunks = []
    while True:
        chunk = _real_os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    _real_os.close(fd)
    text = b"".join(chunks).decode("utf-8", "surrogateescape")
    nodeid = pytest_session.replay_test
    section = pytest_session.rendered_section
    if section is None:
        section = extract_section(text, nodeid)
    if section is None:
        outcome = pytest_session.seen.get(nodeid)
        if outcome is None:
            _write_stderr(f"retrace: test {nodeid} did not run in this replay\n")
        else:
            _write_stderr(f"retrace: test {nodeid} {outcome} in the recording: it has no report section\n")
        return
    out = sys.stdout
    out.write(section)
    out.flush()


_HEADER = re.compile(r"^_{2,} (.+?) _{2,}$")
_BIG_SEP = re.compile(r"^={2,}( .+ ={2,})?$")


def head_line(nodeid: str) -> str:
    """pytest's report head line of a nodeid: ``file.py::Class::test[x]`` ->
    ``Class.test[x]``."""
    parts = nodeid.split("::")[1:]
    return ".".join(parts) if parts else nodeid


def extract_section(text: str, nodeid: str | None) -> str | None:
    """NODEID's section of pytest's report (the failure or error section,
    from its ``____ name ____`` line to the next section or summary line)."""
    if not nodeid:
        return None
    head = head_line(nodeid)
    names = {head, f"ERROR at setup of {head}", f"ERROR at teardown of {head}"}
    lines = text.splitlines(keepends=True)
    path = nodeid.split("::", 1)[0]
    found = []
    i = 0
    while i < len(lines):
        m = _HEADER.match(lines[i].rstrip("\n"))
        if m and m.group(1) in names:
            j = i + 1
            while j < len(lines):
                bare = lines[j].rstrip("\n")
                if _HEADER.match(bare) or _BIG_SEP.match(bare):
                    break
                j += 1
            found.append("".join(lines[i:j]))
            i = j
            continue
        i += 1
    if not found:
        return None
    if len(found) > 1:
        # Same head line in two files: the section naming the test's file.
        base = os.path.basename(path)
        named = [s for s in found if base in s]
        if named:
            return "".join(named)
    return "".join(found)
