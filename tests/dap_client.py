"""A small Debug Adapter Protocol client for the tests: drives
``python -m retracesoftware dap`` over pipes (Content-Length framed JSON)."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

TIMEOUT = 60.0


class DapClient:
    def __init__(self, cwd, env=None):
        self.proc = subprocess.Popen([sys.executable, "-m", "retracesoftware", "dap"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.seq = 1
        self._buffer = b""
        self.events = []         # every event received, in order
        self._responses = {}

    # -- wire ---------------------------------------------------------------
    def _send(self, message):
        body = json.dumps(message).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _read_one(self, deadline):
        fd = self.proc.stdout.fileno()
        while True:
            head, sep, rest = self._buffer.partition(b"\r\n\r\n")
            if sep:
                length = int(head.split(b":", 1)[1].strip())
                if len(rest) >= length:
                    self._buffer = rest[length:]
                    return json.loads(rest[:length])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"DAP adapter silent; events so far: {self.events[-5:]}; "
                                     f"stderr: {self._stderr()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"DAP adapter ended; stderr: {self._stderr()}")
                self._buffer += chunk

    def _stderr(self):
        try:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0)
            return os.read(self.proc.stderr.fileno(), 65536).decode("utf-8", "replace") if ready else ""
        except Exception:
            return ""

    def _pump(self, deadline):
        message = self._read_one(deadline)
        if message.get("type") == "event":
            self.events.append(message)
        elif message.get("type") == "response":
            self._responses[message["request_seq"]] = message
        return message

    # -- API ------------------------------------------------------------------
    def request(self, command, arguments=None, timeout=TIMEOUT, ok=True):
        seq = self.seq
        self.seq += 1
        self._send({"seq": seq, "type": "request", "command": command, "arguments": arguments or {}})
        deadline = time.monotonic() + timeout
        while seq not in self._responses:
            self._pump(deadline)
        response = self._responses.pop(seq)
        if ok:
            assert response["success"], response
        return response

    def wait_event(self, name, timeout=TIMEOUT, start=None):
        """The first event *name* after index *start* of `events` (default:
        not seen by an earlier wait)."""
        deadline = time.monotonic() + timeout
        index = self._seen if start is None else start
        while True:
            for i in range(index, len(self.events)):
                if self.events[i]["event"] == name:
                    self._seen = i + 1
                    return self.events[i]
            index = len(self.events)
            self._pump(deadline)

    _seen = 0

    def output(self, category="stdout") -> str:
        return "".join(e["body"]["output"] for e in self.events
                       if e["event"] == "output" and e["body"].get("category", "console") == category)

    # -- conveniences -----------------------------------------------------------
    def start(self, recording, breakpoints=(), stop_on_entry=False, source=None):
        init = self.request("initialize", {"adapterID": "retrace", "linesStartAt1": True,
                                           "columnsStartAt1": True})
        self.capabilities = init["body"]
        self.request("launch", {"recording": str(recording), "stopOnEntry": stop_on_entry})
        self.wait_event("initialized")
        if breakpoints:
            self.set_breakpoints(source, breakpoints)
        self.request("configurationDone")

    def set_breakpoints(self, source, lines):
        specs = [line if isinstance(line, dict) else {"line": line} for line in lines]
        return self.request("setBreakpoints", {"source": {"path": str(source)}, "breakpoints": specs})

    def stopped(self):
        return self.wait_event("stopped")["body"]

    def top_frame(self, thread_id):
        frames = self.request("stackTrace", {"threadId": thread_id})["body"]["stackFrames"]
        return frames[0]

    def evaluate(self, expression, frame_id):
        return self.request("evaluate", {"expression": expression, "frameId": frame_id,
                                         "context": "watch"})["body"]["result"]

    def close(self):
        try:
            if self.proc.poll() is None:
                try:
                    self.request("disconnect", timeout=10, ok=False)
                except AssertionError:
                    pass
        finally:
            try:
                self.proc.stdin.close()
            except Exception:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _processes_with(text):
    """Live processes whose command line contains *text* (zombies have none)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(name))
    return found


def _assert_none_left(text, timeout=20.0):
    """Every process of the session is gone (they die with the supervisor,
    PR_SET_PDEATHSIG: asynchronously, so poll)."""
    deadline = time.monotonic() + timeout
    while _processes_with(text):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes left: {_processes_with(text)}")
        time.sleep(0.05)
