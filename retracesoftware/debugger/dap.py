"""``python -m retracesoftware dap``: a Debug Adapter Protocol server on
stdin/stdout (Content-Length framed JSON) for VS Code and any DAP client.

The adapter starts the replay (``python -m retracesoftware --recording
PATH``) with an agent inside it (agent.py) on a pair of pipes, forwards
requests to it and its responses and events back. The program's stdout and
stderr go to files the adapter follows: their bytes become ``output``
events, each byte once — when the replay goes back in time it re-executes
and writes its output again from the start, and the adapter skips what it
has already sent (a replay writes the same bytes every time). ``exited``
carries the replay's exit code, which on a faithful replay is the recorded
one.
"""
from __future__ import annotations

import codecs
import json
import os
import select
import signal
import subprocess
import sys
import tempfile

from retracesoftware.debugger import DAP_ENV, STATE_ENV
from retracesoftware.debugger.protocol import CAPABILITIES, Channel, dap_thread_id, thread_name

_FORWARDED = {"setBreakpoints", "configurationDone", "threads", "stackTrace", "scopes", "variables",
              "evaluate", "continue", "next", "stepIn", "stepOut", "stepBack", "reverseContinue", "pause",
              "restart"}


class Adapter:
    def __init__(self, rfd=0, wfd=1):
        self.rfd = rfd
        self.wfd = wfd
        self.seq = 1
        self._in = b""
        self.proc = None
        self.agent = None
        self.outputs = {}        # category -> [read fd, bytes sent, decoder, path]
        self.exited = False
        self.done = False
        self.recording = None
        self._recording_threads = None

    # -- the client side ------------------------------------------------------------
    def send(self, message: dict) -> None:
        message["seq"] = self.seq
        self.seq += 1
        body = json.dumps(message).encode()
        data = b"Content-Length: %d\r\n\r\n" % len(body) + body
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def respond(self, request, success=True, body=None, message=None):
        reply = {"type": "response", "request_seq": request.get("seq"), "command": request.get("command"),
                 "success": success, "body": body or {}}
        if message:
            reply["message"] = message
        self.send(reply)

    def event(self, name, body=None):
        self.send({"type": "event", "event": name, "body": body or {}})

    def _client_messages(self, data: bytes) -> list:
        self._in += data
        out = []
        while True:
            head, sep, rest = self._in.partition(b"\r\n\r\n")
            if not sep:
                return out
            length = None
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length is None:
                raise ValueError("DAP message without Content-Length")
            if len(rest) < length:
                return out
            out.append(json.loads(rest[:length]))
            self._in = rest[length:]

    # -- main loop ---------------------------------------------------------------------
    def run(self) -> int:
        try:
            while not self.done:
                fds = [self.rfd] + ([self.agent.rfd] if self.agent is not None else [])
                ready, _, _ = select.select(fds, [], [], 0.05)
                if self.rfd in ready:
                    data = os.read(self.rfd, 65536)
                    if not data:
                        break
                    for request in self._client_messages(data):
                        self.handle(request)
                if self.agent is not None and self.agent.rfd in ready:
                    data = os.read(self.agent.rfd, 65536)
                    if not data:
                        self._agent_closed()
                    else:
                        for message in self.agent.feed(data):
                            self.poll_output()
                            self.from_agent(message)
                self.poll_output()
                if self.proc is not None and not self.exited and self.proc.poll() is not None \
                        and self.agent is None:
                    self._finish()
        finally:
            self._cleanup()
        return 0

    def _agent_closed(self):
        os.close(self.agent.rfd)
        self.agent = None
        if self.proc is not None:
            self.proc.wait()
            self._finish()

    def _finish(self):
        if self.exited:
            return
        self.exited = True
        self.poll_output(final=True)
        code = self.proc.returncode
        if code < 0:
            code = 128 - code
        self.event("exited", {"exitCode": code})
        self.event("terminated")

    def poll_output(self, final=False):
        for category, entry in self.outputs.items():
            rfd, sent, decoder, _ = entry
            try:
                size = os.fstat(rfd).st_size
            except OSError:
                continue
            if size <= sent:
                continue
            data = os.pread(rfd, size - sent, sent)
            entry[1] = sent + len(data)
            text = decoder.decode(data, final)
            if text:
                self.event("output", {"category": category, "output": text})

    def _cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
                self.proc.wait()
            except OSError:
                pass
        for rfd, _, _, path in self.outputs.values():
            try:
                os.close(rfd)
                os.unlink(path)
            except OSError:
                pass

    # -- requests ------------------------------------------------------------------------
    def handle(self, request):
        command = request.get("command")
        try:
            if command == "initialize":
                self.respond(request, body=dict(CAPABILITIES))
            elif command == "launch":
                self.launch(request)
            elif command in ("disconnect", "terminate"):
                if self.proc is not None and self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
                self.respond(request)
                if command == "terminate":
                    self._finish()
                else:
                    self.done = True
            elif command in _FORWARDED:
                if self.agent is None:
                    if command == "threads":
                        self.respond(request, body={"threads": self._threads([])})
                    else:
                        self.respond(request, False, message=f"{command}: the replay has ended")
                    return
                self.agent.send({"seq": request.get("seq"), "command": command,
                                 "arguments": request.get("arguments") or {}})
            else:
                self.respond(request, False, message=f"{command} is not supported by the retrace adapter")
        except Exception as exc:
            self.respond(request, False, message=f"{type(exc).__name__}: {exc}")

    def launch(self, request):
        args = request.get("arguments") or {}
        recording = args.get("recording")
        if not recording or not os.path.exists(recording):
            self.respond(request, False, message=f"launch needs \"recording\": an existing recording file "
                                                 f"(got {recording!r})")
            return
        self.recording = os.path.abspath(recording)
        argv = [sys.executable, "-m", "retracesoftware", "--recording", self.recording]
        if args.get("force"):
            argv.append("--force")
        if args.get("pid") is not None:
            argv += ["--pid", str(int(args["pid"]))]
        to_agent_r, to_agent_w = os.pipe()
        from_agent_r, from_agent_w = os.pipe()
        env = dict(os.environ)
        env[DAP_ENV] = f"{to_agent_r},{from_agent_w}"
        env[STATE_ENV] = json.dumps({"stopOnEntry": bool(args.get("stopOnEntry"))})
        files = {}
        for category in ("stdout", "stderr"):
            fd, path = tempfile.mkstemp(prefix=f"retrace-dap-{category}-")
            files[category] = fd
            self.outputs[category] = [os.open(path, os.O_RDONLY), 0,
                                      codecs.getincrementaldecoder("utf-8")("replace"), path]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=files["stdout"],
                                     stderr=files["stderr"], env=env, cwd=args.get("cwd") or None,
                                     pass_fds=(to_agent_r, from_agent_w))
        for fd in (to_agent_r, from_agent_w, files["stdout"], files["stderr"]):
            os.close(fd)
        self.agent = Channel(from_agent_r, to_agent_w)
        self.respond(request)
        self.event("process", {"name": self.recording, "systemProcessId": self.proc.pid,
                               "startMethod": "launch"})
        self.event("initialized")

    # -- from the agent ---------------------------------------------------------------------
    def from_agent(self, message):
        if message.get("type") == "response" and message.get("command") == "threads" \
                and message.get("success"):
            message["body"]["threads"] = self._threads(message["body"].get("threads") or [])
        self.send(message)

    def _threads(self, live):
        """Every thread of the recording (read from it once), and any the
        agent knows."""
        if self._recording_threads is None:
            self._recording_threads = recording_threads(self.recording) if self.recording else []
        by_id = {t["id"]: t for t in live}
        for tid in self._recording_threads:
            by_id.setdefault(dap_thread_id(tid), {"id": dap_thread_id(tid), "name": thread_name(tid)})
        return sorted(by_id.values(), key=lambda t: t["id"])


def recording_threads(path) -> list:
    """The logical thread ids that made events in the recording at *path*."""
    from retracesoftware.stream import StreamReader

    seen = [0]
    try:
        reader = StreamReader(path)
    except Exception:
        return seen
    try:
        while True:
            kind = reader.next_kind
            if kind is None:
                break
            tid = reader.thread
            if tid is not None and tid not in seen:
                seen.append(tid)
            if kind == "binding":
                reader.bind(_Placeholder())
            else:
                reader.read()
    except Exception:
        pass
    finally:
        try:
            reader.close()
        except Exception:
            pass
    return seen


class _Placeholder:
    __slots__ = ("__weakref__",)


def main(argv=None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # Our stdout is the protocol: keep stray prints of ours off it.
    wfd = os.dup(1)
    os.dup2(2, 1)
    return Adapter(0, wfd).run()
