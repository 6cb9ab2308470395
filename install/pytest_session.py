"""Whole pytest sessions under retrace: ``pytest --retrace-record PATH`` and
the program side of ``python -m retracesoftware --recording PATH --test NODEID``.

Record (docs/PYTEST.md, "A CI failure on a laptop"):

* ``pytest --retrace-record PATH`` (or ``RETRACE_RECORD=PATH``) makes the
  pytest process, as early as pytest lets a plugin run
  (``pytest_load_initial_conftests``), run the same command again under the
  CLI recorder — ``python -m retracesoftware --recording PATH -- python
  <the same argv>`` — and wait for it. So the session is recorded exactly as
  the CLI records any program: its children, xdist's workers included, are
  recordings under ``PATH.children/``. The outer process records nothing
  itself: it only decides what to keep (``--retrace-keep failed``, the
  default: a session that passed leaves nothing behind) and exits with the
  session's exit code.
* Inside the recorded session the plugin marks every test report on the
  tape (the pseudo boundary call ``retrace.pytest.report``, whose result
  holds ``(nodeid, when, outcome, worker)``): ``inspect`` lists the tests of
  a recording, and ``--test`` finds the process that ran one. At the end it
  prints one line per failed test with the command that replays it.

Replay (``--test NODEID``, set up by retracesoftware/test_replay.py): the
same plugin, replayed, stops the debugger at the test's first line
(``--pdb``) and, in an xdist worker (which prints nothing itself), renders
the test's report section the way the controller showed it.
"""
from __future__ import annotations

import os
import sys

#: set in the environment of the recorded session: the recording's path
ACTIVE_ENV = "RETRACE_RECORD_ACTIVE"
RECORD_ENV = "RETRACE_RECORD"
KEEP_ENV = "RETRACE_KEEP"
#: name of the controller's recording when --retrace-record names a directory
SESSION_FILE = "session.bin"
REPORT_CALL = "retrace.pytest.report"
SOURCES_CALL = "retrace.pytest.sources"

# Private references, taken before anything is patched.
_environ = os.environ
_getpid = os.getpid

# ---------------------------------------------------------------- replay state
#: --test NODEID of this replay (set by retracesoftware/test_replay.py)
replay_test: str | None = None
#: --pdb: stop in the test's first line
replay_pdb = False
#: a pdb.Pdb factory talking to the real terminal (set by test_replay.py)
make_debugger = None
#: the report section an xdist worker's replay rendered for replay_test
rendered_section: str | None = None
#: nodeids whose reports this replay saw
seen: dict = {}


def _report_marker(nodeid, when, outcome, worker):
    return (nodeid, when, outcome, worker)


def _sources_marker(root, relpaths):
    """The digests of the session's test files (relative to the directory
    pytest ran in): run for real when recording, read from the tape on
    replay (retracesoftware/paths.py checks them before remapping a root)."""
    from retracesoftware.preamble import file_digest
    out = {}
    for rel in relpaths:
        digest = file_digest(os.path.join(root, rel))
        if digest is not None:
            out[rel] = digest
    return out


def _mark_sources(config, items) -> None:
    from retracesoftware.install import session_base as session_mod
    current = getattr(session_mod, "current_session", None)
    if current is None or current.system is None:
        return
    root = str(config.invocation_params.dir)
    files = set()
    for item in items:
        path = getattr(item, "path", None)
        if path is not None:
            files.add(str(path))
    for conftest in getattr(config.pluginmanager, "_conftest_plugins", ()):
        name = getattr(conftest, "__file__", None)
        if name:
            files.add(name)
    rel = sorted(os.path.relpath(f, root) for f in files if f.startswith(root + os.sep))
    current.system.patch_function(_sources_marker, SOURCES_CALL)(root, rel)


_marker = None


def _mark(report, worker):
    """Put the report on the tape (record) / check it there (replay)."""
    global _marker
    from retracesoftware.install import session_base as session_mod
    current = getattr(session_mod, "current_session", None)
    if current is None or current.system is None:
        return
    if _marker is None or _marker[0] is not current:
        _marker = (current, current.system.patch_function(_report_marker, REPORT_CALL))
    try:
        _marker[1](str(report.nodeid), str(report.when), str(report.outcome), worker)
    except Exception as exc:   # a divergence here is the replay's business
        from retracesoftware.utils.errors import ReplayDivergence
        if isinstance(exc, ReplayDivergence):
            raise


def recording_path(value: str) -> str:
    """PATH as given; a directory (existing, or written with a trailing
    slash) holds the controller's recording as ``session.bin``."""
    from retracesoftware.record_replay import expand_recording_path
    value = expand_recording_path(value)
    if value.endswith(os.sep) or os.path.isdir(value):
        os.makedirs(value, exist_ok=True)
        return os.path.join(value, SESSION_FILE)
    parent = os.path.dirname(os.path.abspath(value))
    os.makedirs(parent, exist_ok=True)
    return value


def _remove(path: str) -> None:
    import shutil
    from retracesoftware.children import children_dir
    for victim in (path,):
        try:
            os.unlink(victim)
        except OSError:
            pass
    shutil.rmtree(children_dir(path), ignore_errors=True)


#: pytest exit codes of a session that passed (5: no tests collected)
_PASSED = (0, 5)


def record_session_if_asked(early_config) -> None:
    """``pytest_load_initial_conftests``: run this pytest command again under
    the CLI recorder and exit with its code (never returns), or return at once
    when no recording is asked for or this process is the recorded one."""
    ns = early_config.known_args_namespace
    path = getattr(ns, "retrace_record", None) or _environ.get(RECORD_ENV)
    # xdist workers of a recorded session inherit ACTIVE_ENV from the recorded
    # main process; PYTEST_XDIST_WORKER alone is no sign (a test run under
    # xdist that starts `pytest --retrace-record` passes it on to that pytest).
    if not path or _environ.get(ACTIVE_ENV):
        return
    from retracesoftware.install import session_base as session_mod
    if getattr(session_mod, "current_session", None) is not None:
        return   # already recorded (or replayed) by the CLI
    keep = getattr(ns, "retrace_keep", None) or _environ.get(KEEP_ENV) or "failed"
    if keep not in ("failed", "always"):
        from _pytest.config import UsageError
        raise UsageError(f"--retrace-keep must be 'failed' or 'always', not {keep!r}")
    if getattr(ns, "retrace", False):
        from _pytest.config import UsageError
        raise UsageError("--retrace (in-process determinism check) and --retrace-record (record the "
                         "session) are two separate runs: give one of them")
    import subprocess
    from retracesoftware.runner import split_interpreter_options
    path = recording_path(path)
    options, rest = split_interpreter_options(list(sys.orig_argv[1:]), check=False)
    command = [sys.executable, *options, "-m", "retracesoftware", "--recording", path, "--",
               sys.executable, *options, *rest]
    env = dict(_environ)
    env[ACTIVE_ENV] = path
    # pytest's global capture is already on (its hookwrapper around this
    # hook): the recorded session writes to the real stdout/stderr.
    capman = early_config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 2
    if code < 0:          # killed by a signal
        code = 128 - code
    if keep == "failed" and code in _PASSED:
        _remove(path)
    elif os.path.exists(path):
        sys.stderr.write(f"retrace: session recording kept: {path} (replay a failed test with the command "
                         f"printed for it; list its tests: python -m retracesoftware inspect {path})\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _shell_quote(word: str) -> str:
    import shlex
    return shlex.quote(word)


#: seconds an xdist controller waits for a worker to end in a recorded session
WORKER_EXIT_TIMEOUT = 120


def _optional_hook(fn):
    """``pytest.hookimpl(optionalhook=True)`` without importing pytest (the
    replay reads this module before the program imports anything): an
    xdist hook, an INTERNALERROR in a session without pytest-xdist."""
    fn.pytest_impl = {"wrapper": False, "hookwrapper": False, "optionalhook": True,
                      "tryfirst": False, "trylast": False, "specname": None}
    return fn


def _patient_execnet_worker() -> None:
    """xdist worker: execnet's worker, told to terminate, waits 5 s for the
    running task (the worker's pytest session), sends itself SIGINT, waits
    10 s more and calls ``os._exit(1)`` from its receiver thread. A recorded
    worker can be slower than that to end its session (seen: hypothesis's
    plugin importing hypothesis in pytest_terminal_summary, under load), and
    an ``os._exit`` from another thread leaves the worker's recording without
    its end (the replay stops at "the recording ends early"). The waits are
    raised to the controller's WORKER_EXIT_TIMEOUT. The patch is part of the
    recorded worker (this plugin runs in it): its replay does the same."""
    gateway_base = sys.modules.get("execnet.gateway_base")
    pool = getattr(gateway_base, "WorkerPool", None)
    waitall = getattr(pool, "waitall", None)
    if waitall is None or getattr(waitall, "retrace_patient", False):
        return

    def patient_waitall(self, timeout=None):
        return waitall(self, None if timeout is None else max(timeout, WORKER_EXIT_TIMEOUT))
    patient_waitall.retrace_patient = True
    patient_waitall.__wrapped__ = waitall
    pool.waitall = patient_waitall


class SessionReporter:
    """Registered in a session recorded or replayed by the CLI: marks each
    test report on the tape; at the end prints how to replay each failure."""

    def __init__(self, config):
        self.config = config
        self.worker = getattr(config, "workerinput", {}).get("workerid") if hasattr(config, "workerinput") else None
        if self.worker is not None:
            _patient_execnet_worker()
        self.path = _environ.get(ACTIVE_ENV)
        #: xdist: gateway id -> the worker's pid
        self.worker_pids: dict = {}
        self.failed: list = []

    def pytest_collection_finish(self, session):
        if self.worker is None:   # the controller or a plain session (xdist workers collect too)
            _mark_sources(self.config, session.items)

    @_optional_hook
    def pytest_xdist_setupnodes(self, config, specs):
        """xdist controller: a worker that is slow to end (it closes its
        recording) is not killed after xdist's 10 s (its recording would
        end early: the worker's tests could not be replayed)."""
        manager = sys.modules.get("xdist.workermanage")
        node_manager = getattr(manager, "NodeManager", None)
        if node_manager is not None and getattr(node_manager, "EXIT_TIMEOUT", 0) < WORKER_EXIT_TIMEOUT:
            node_manager.EXIT_TIMEOUT = WORKER_EXIT_TIMEOUT

    @_optional_hook
    def pytest_testnodeready(self, node):
        """xdist controller: which process each worker is (its recording is
        the child recording with that pid)."""
        try:
            self.worker_pids[node.gateway.id] = node.gateway._io.popen.pid
        except AttributeError:
            pass

    def pytest_runtest_logreport(self, report):
        node = getattr(report, "node", None)
        worker = self.worker
        if node is not None:
            worker = getattr(getattr(node, "gateway", None), "id", worker)
        _mark(report, worker)
        if report.failed and not any(f[0] == report.nodeid for f in self.failed):
            self.failed.append((report.nodeid, worker, _display_nodeid(self.config, report)))
        if replay_test is not None and report.nodeid == replay_test:
            if seen.get(report.nodeid) != "failed":   # a failed call, then a passed teardown
                seen[report.nodeid] = report.outcome
            if self.worker is not None and report.failed:
                _render_section(self.config, report, self.worker)

    def pytest_terminal_summary(self, terminalreporter):
        if not self.failed or not self.path:
            return
        tr = terminalreporter
        tr.write_sep("=", "retrace: replay a failed test")
        for nodeid, worker, display in self.failed:
            words = ["python", "-m", "retracesoftware", "--recording", self.path]
            pid = self.worker_pids.get(worker)
            if pid is not None:
                words += ["--pid", str(pid)]
            words += ["--test", display]
            tr.write_line(" ".join(_shell_quote(w) for w in words) + "  [--pdb]")

    def pytest_runtest_call(self, item):
        if replay_pdb and replay_test is not None and item.nodeid == replay_test:
            _stop_in_test(item)


def _display_nodeid(config, report) -> str:
    """The nodeid as pytest's summary shows it (relative to the directory
    pytest was run from)."""
    try:
        ident = getattr(report, "id", None)   # pytest >= 9: a NodeId
        return str(config.cwd_relative_nodeid(ident if ident is not None else report.nodeid))
    except Exception:
        return report.nodeid


def _head_line(report) -> str:
    return report.head_line or "test session"


def _render_section(config, report, worker) -> None:
    """The report section the xdist controller printed for *report* (the
    worker itself prints nothing): rendered outside the recording."""
    global rendered_section
    from retracesoftware.install import session_base as session_mod
    current = getattr(session_mod, "current_session", None)
    gate = current.system.gate if current is not None else None
    from retracesoftware.utils import DISABLED
    previous = gate.swap(DISABLED) if gate is not None else None
    try:
        import io
        from _pytest._io import TerminalWriter
        buf = io.StringIO()
        tw = TerminalWriter(buf)
        tw.hasmarkup = False
        tw.fullwidth = _controller_width()
        if report.when == "call":
            tw.sep("_", _head_line(report))
        else:
            tw.sep("_", f"ERROR at {report.when} of {_head_line(report)}")
        tw.line(f"[{worker}] {sys.platform} -- Python {'.'.join(map(str, sys.version_info[:3]))} "
                f"{sys.executable}")
        longrepr = report.longrepr
        if hasattr(longrepr, "toterminal"):
            longrepr.toterminal(tw)
        else:
            tw.line(str(longrepr))
        showcapture = config.option.showcapture
        if showcapture != "no":
            for secname, content in report.sections:
                if showcapture != "all" and showcapture not in secname:
                    continue
                tw.sep("-", secname)
                if content[-1:] == "\n":
                    content = content[:-1]
                tw.line(content)
        rendered_section = buf.getvalue()
    finally:
        if gate is not None:
            gate.phase = previous


def _controller_width() -> int:
    try:
        return int(_environ.get("COLUMNS", ""))
    except ValueError:
        return 80


def _test_function(item):
    fn = getattr(item, "obj", None)
    fn = getattr(fn, "__func__", fn)
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return getattr(fn, "__code__", None)


def _stop_in_test(item) -> None:
    """--test NODEID --pdb: the debugger stops at the first line of the test
    function (a one-shot trace function waits for the call of its code)."""
    code = _test_function(item)
    if code is None or make_debugger is None:
        return
    debugger = make_debugger()
    previous = sys.gettrace()

    def wait_for_test(frame, event, arg):
        if event == "call" and frame.f_code is code:
            sys.settrace(previous)
            debugger.set_trace(frame)   # stops at the next line: the test's first
            return debugger.trace_dispatch
        return None
    sys.settrace(wait_for_test)


# ------------------------------------------------------------------ inspect
def _scan(path: str):
    """(test reports, source digests) marked on a recording's tape (no
    replay: reads the events)."""
    from retracesoftware.install.recording_streams import open_recording
    from retracesoftware.utils.errors import RecordingFormatError

    class _Placeholder:
        __slots__ = ()

    reports, sources = [], {}
    try:
        reader = open_recording(path)
    except RecordingFormatError:
        return reports, sources
    state, name = 0, None   # 1: saw CALL, 2: saw one of our names, 3: saw its RESULT
    try:
        while True:
            kind = reader.next_kind
            if kind is None:
                break
            if kind == "binding":
                reader.bind(_Placeholder())
                continue
            value = reader.read()
            if state == 0:
                state = 1 if value == "CALL" else 0
            elif state == 1:
                state, name = (2, value) if value in (REPORT_CALL, SOURCES_CALL) else (0, None)
            elif state == 2:
                if value == "RESULT":
                    state = 3
            elif state == 3:
                if name == REPORT_CALL and isinstance(value, (tuple, list)) and len(value) == 4:
                    nodeid, when, outcome, worker = value
                    reports.append({"nodeid": nodeid, "when": when, "outcome": outcome, "worker": worker})
                elif name == SOURCES_CALL and isinstance(value, dict):
                    sources.update(value)
                state = 0
    except (RecordingFormatError, EOFError):
        pass
    finally:
        reader.close()
    return reports, sources


def tests_in(path: str) -> list:
    """The test reports marked on a recording's tape: dicts with nodeid,
    when, outcome, worker."""
    return _scan(path)[0]


def sources_in(path: str) -> dict:
    """The test files' digests marked on a recording's tape (relative path -> sha256)."""
    return _scan(path)[1]


def outcomes(reports: list) -> list:
    """One (nodeid, outcome, worker) per test: failed if any phase failed
    (an error in setup/teardown shows as "error"), else the call's outcome."""
    merged: dict = {}
    for rep in reports:
        key = rep["nodeid"]
        outcome = rep["outcome"]
        if rep["when"] != "call" and outcome == "failed":
            outcome = "error"
        elif rep["when"] != "call" and outcome == "passed":
            outcome = None
        have = merged.get(key)
        if have is None:
            merged[key] = [outcome, rep["worker"]]
        elif outcome is not None and have[0] in (None, "passed"):
            have[0] = outcome
    return [(k, v[0] or "passed", v[1]) for k, v in merged.items()]

