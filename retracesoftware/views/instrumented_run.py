"""The parent side of the instrumented replay (views/instrument.py is the
child's): `run_instrumented` starts the child replay, turns its progress
into calls of ``progress(done, total)``, and returns an `InstrumentedRun`
that the views read (spans and reads streamed from disk: flat memory);
`stop_at_event` replays to one event and returns the program's stack there.

The files the child leaves in its folder are the contract between the two:
``spans.bin`` (int64 × `SPAN_FIELDS` per span), ``reads.bin`` (int64 event
index, int64 ns, int64 code slot per event), ``meta.json``, and
``stop.json`` for `stop_at_event`. This module never imports the runtime's
patches.
"""
from __future__ import annotations

import array
import json
import os
import sys
import time

SPAN_FIELDS = 5           # thread slot, code slot, depth, start ns, end ns


class InstrumentedRun:
    """What an instrumented replay left: read by the views."""

    def __init__(self, out_dir, returncode, stderr_text, elapsed_s):
        self.dir = out_dir
        self.returncode = returncode
        self.stderr = stderr_text
        self.elapsed_s = elapsed_s
        #: the child wrote its results (meta.json): False when it died or
        #: ended with os._exit before its atexit handler
        self.has_results = False
        try:
            with open(os.path.join(out_dir, "meta.json"), "rb") as fh:
                self.meta = json.loads(fh.read())
            self.has_results = True
        except (OSError, ValueError):
            self.meta = {"codes": [], "threads": [], "edges": [], "calls": [], "total_ns": [], "spans": 0}
        self.codes = self.meta.get("codes", [])
        self.threads = self.meta.get("threads", [])

    def _error_line(self):
        for line in self.stderr.splitlines():
            if line.startswith("retrace: error:"):
                return line[len("retrace: error: "):]
        return None

    @property
    def faithful(self) -> bool:
        """The replay ran the program under the tracer to its end, as
        recorded. Never true for a replay that did not start (an error of
        ours, exit 1 or 2), died (a signal) or left no results: what the
        views show of it (an empty architecture map) is not the run's."""
        return (self.has_results and bool(self.meta.get("started")) and not self.meta.get("divergence")
                and self.returncode >= 0 and self.returncode not in (3, 4) and self._error_line() is None)

    @property
    def problem(self):
        if self.meta.get("divergence"):
            return self.meta["divergence"]
        error = self._error_line()
        if not self.has_results:
            why = error or (f"killed by signal {-self.returncode}" if self.returncode < 0
                            else f"exit code {self.returncode}")
            return f"the instrumented replay left no results ({why})"
        if not self.meta.get("started"):
            return f"the instrumented replay did not start ({error or f'exit code {self.returncode}'})"
        if error is not None:
            return error
        if self.returncode in (3, 4) or self.returncode < 0:
            return f"replay ended with exit code {self.returncode}"
        return None

    def spans(self, chunk=1 << 15):
        """(thread slot, code slot, depth, start ns, end ns), streamed from disk."""
        path = os.path.join(self.dir, "spans.bin")
        if not os.path.exists(path):
            return
        size = array.array("q").itemsize * SPAN_FIELDS
        with open(path, "rb") as fh:
            while True:
                data = fh.read(size * chunk)
                if not data:
                    return
                items = array.array("q")
                items.frombytes(data[: len(data) - len(data) % size])
                for i in range(0, len(items), SPAN_FIELDS):
                    yield items[i], items[i + 1], items[i + 2], items[i + 3], items[i + 4]

    def reads(self, chunk=1 << 16):
        """(event index, replay time ns, code slot of the consuming thread's
        innermost project frame or -1) for every event the replay consumed,
        in tape order, streamed from disk."""
        path = os.path.join(self.dir, "reads.bin")
        if not os.path.exists(path):
            return
        size = 8 * 3
        with open(path, "rb") as fh:
            while True:
                data = fh.read(size * chunk)
                if not data:
                    return
                items = array.array("q")
                items.frombytes(data[: len(data) - len(data) % size])
                for i in range(0, len(items), 3):
                    yield items[i], items[i + 1], items[i + 2]

    def where(self, slot) -> str | None:
        if slot is None or slot < 0 or slot >= len(self.codes):
            return None
        filename, qualname, module, line = self.codes[slot]
        return f"{qualname} ({os.path.basename(filename)}:{line})"

    @property
    def program_traceback(self) -> list[str]:
        """The replayed program's uncaught-exception traceback (its stderr)."""
        lines = [line for line in self.stderr.splitlines() if not line.startswith("retrace:")]
        for i in range(len(lines) - 1, -1, -1):
            if lines[i].startswith("Traceback (most recent call last):"):
                return lines[i:i + 80]
        return []

    def unit_of(self, slot) -> tuple[str, str | None]:
        """(module, class or None) of a code slot, for the architecture map."""
        filename, qualname, module, _ = self.codes[slot]
        if not module or module == "__main__":
            base = os.path.splitext(os.path.basename(filename))[0] if not filename.startswith("<") else filename
            module = f"{base} (__main__)" if module == "__main__" else base
        # A nested function or lambda belongs to the class of the function
        # that defines it: "Service.handle.<locals>.<genexpr>" -> Service.
        outer = qualname.split(".<locals>.")[0].split(".")
        cls = ".".join(outer[:-1]) or None
        return module, cls

    def close(self):
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


def _read_preamble(path):
    from retracesoftware.install.recording_streams import open_recording
    reader = open_recording(path)
    try:
        return reader.preamble
    finally:
        reader.close()


def run_instrumented(path, *, include=(), exclude=(), spans=True, max_depth=None, progress=None,
                     replay_args=(), stop_at=None, expression=None) -> InstrumentedRun:
    """Replay *path* with the tracer in a child process; return what it found.

    ``progress(done_bytes, total_bytes)`` is called as the replay advances
    (see `progress.Progress`). The recording is never modified."""
    import subprocess
    import tempfile
    import threading
    from retracesoftware.views.span_tracer import library_dirs

    pre = _read_preamble(path)
    out_dir = tempfile.mkdtemp(prefix="retrace-views-")
    total = os.path.getsize(path)
    read_fd, write_fd = os.pipe()
    options = {"include": list(include or ()), "exclude": list(exclude or ()), "spans": spans,
               "max_depth": max_depth, "progress_fd": write_fd, "replay_args": list(replay_args),
               "stop_at": stop_at, "expression": expression, "library": list(library_dirs()),
               "code_target": isinstance(pre, dict) and (pre.get("target") or {}).get("kind") == "code"}
    env = dict(os.environ)
    seed = pre.get("hash_seed") if isinstance(pre, dict) else None
    if seed is not None:
        # What the replay would re-exec itself with (record_replay.reexec_with_hash_seed).
        env["PYTHONHASHSEED"] = str(seed)
        env["RETRACE_PINNED_HASHSEED"] = str(seed)
    code = ("import sys; from retracesoftware.views.instrument import _child_main; "
            "sys.exit(_child_main(sys.argv[1:]))")
    stderr_path = os.path.join(out_dir, "stderr.txt")
    started = time.perf_counter()
    cwd = pre.get("cwd") if isinstance(pre, dict) and isinstance(pre.get("cwd"), str) and os.path.isdir(pre.get("cwd")) else None
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, out_dir, os.path.abspath(path), json.dumps(options)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                pass_fds=(write_fd,), env=env, cwd=cwd)
    os.close(write_fd)

    def pump():
        with os.fdopen(read_fd, "rb") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 2 and progress is not None:
                    try:
                        progress(int(parts[1]), total)
                    except Exception:
                        pass
    reader_thread = threading.Thread(target=pump, daemon=True)
    reader_thread.start()
    returncode = proc.wait()
    reader_thread.join()
    elapsed = time.perf_counter() - started
    with open(stderr_path, "rb") as fh:
        stderr_text = fh.read().decode("utf-8", "replace")
    if progress is not None:
        progress(total, total)
    return InstrumentedRun(out_dir, returncode, stderr_text, elapsed)


def stop_at_event(path, event, expression=None) -> dict:
    """Replay *path* to event *event* and return the program's stack there
    (``stack``: outermost first, ``project`` marks the project's frames),
    and with *expression* its value in the innermost project frame."""
    run = run_instrumented(path, spans=False, stop_at=int(event), expression=expression)
    try:
        try:
            with open(os.path.join(run.dir, "stop.json"), "rb") as fh:
                return json.loads(fh.read())
        except (OSError, ValueError):
            reason = run.problem or f"the replay ended before event {event}"
            return {"error": reason, "stack": []}
    finally:
        run.close()
