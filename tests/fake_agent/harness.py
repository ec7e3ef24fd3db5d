"""A small raw harness: the fake agent as a real subprocess, JSON lines both ways.

Deliberately independent of vm_agent.jsonrpc, so that these tests check the
fake agent's wire behaviour byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

WAIT_S = 20.0  # generous bound so a broken agent fails the test instead of hanging it

Message = dict[str, Any]
ClientHandler = Callable[[Message], Message]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_AGENT_")}
    env.update(extra)
    return env


class Agent:
    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vm_agent.fake_agent", *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env() if env is None else env,
            start_new_session=True,  # its own process group, so cleanup can kill it all
        )
        self.pgid = self.proc.pid
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._stderr = bytearray()
        self._stderr_lock = threading.Lock()
        self._next_id = 100
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()

    # -- plumbing --------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")  # EOF marker

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while data := os.read(fd, 1 << 16):
            with self._stderr_lock:
                self._stderr += data

    @property
    def stderr(self) -> bytes:
        with self._stderr_lock:
            return bytes(self._stderr)

    def stderr_complete(self) -> bytes:
        """All of stderr, once the agent's stderr reached EOF."""
        self._stderr_thread.join(WAIT_S)
        return self.stderr

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_group()

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        try:
            self.proc.wait(WAIT_S)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    # -- raw I/O -----------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: Message) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def line(self, timeout: float = WAIT_S) -> bytes:
        """The next raw stdout line (b"" at EOF)."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from the agent within {timeout} s") from None

    def no_line_within(self, seconds: float) -> bool:
        try:
            self._lines.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def message(self) -> Message:
        line = self.line()
        assert line, f"agent closed stdout; stderr: {self.stderr[-2000:]!r}"
        message = json.loads(line)
        assert isinstance(message, dict)
        return message

    def wait(self, timeout: float = WAIT_S) -> int:
        return self.proc.wait(timeout)

    # -- JSON-RPC ----------------------------------------------------------------

    def request(self, method: str, params: Any = None) -> int:
        self._next_id += 1
        message: Message = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self._next_id

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def collect(
        self, request_id: int, on_request: ClientHandler | None = None
    ) -> tuple[list[Message], Message]:
        """Messages up to the answer to `request_id`: (everything before it, the answer).

        Requests from the agent are answered with `on_request` (and still listed).
        """
        seen: list[Message] = []
        while True:
            message = self.message()
            if message.get("id") == request_id and "method" not in message:
                return seen, message
            seen.append(message)
            if "method" in message and "id" in message:
                assert on_request is not None, f"unexpected request {message}"
                reply = on_request(message)
                self.send({"jsonrpc": "2.0", "id": message["id"], **reply})

    def call(self, method: str, params: Any = None) -> tuple[list[Message], Message]:
        return self.collect(self.request(method, params))

    def initialize(self) -> Message:
        _, answer = self.call(
            "initialize",
            {
                "protocolVersion": 1,
                "clientCapabilities": {
                    "fs": {"readTextFile": True, "writeTextFile": True},
                    "terminal": True,
                },
                "clientInfo": {"name": "fake-agent-tests", "version": "0"},
            },
        )
        return answer

    def new_session(self, cwd: str) -> str:
        _, answer = self.call("session/new", {"cwd": cwd, "mcpServers": []})
        session_id = answer["result"]["sessionId"]
        assert isinstance(session_id, str)
        return session_id

    def start(self, cwd: str) -> str:
        """initialize + session/new; the new session's id."""
        assert "result" in self.initialize()
        return self.new_session(cwd)

    def prompt(self, session_id: str, text: str) -> int:
        return self.request(
            "session/prompt",
            {"sessionId": session_id, "prompt": [{"type": "text", "text": text}]},
        )


def chunk_texts(messages: list[Message], kind: str = "agent_message_chunk") -> list[str]:
    return [
        m["params"]["update"]["content"]["text"]
        for m in messages
        if m.get("method") == "session/update" and m["params"]["update"]["sessionUpdate"] == kind
    ]


def updates(messages: list[Message]) -> list[str]:
    return [
        m["params"]["update"]["sessionUpdate"]
        for m in messages
        if m.get("method") == "session/update"
    ]


def alive(pid: int) -> bool:
    """True for a running process; a zombie (killed, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")
