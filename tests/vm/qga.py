"""A client for qemu-guest-agent: JSON commands over the virtio-serial port that qemu
exposes on the host as a unix socket.

The socket is qemu's, so it accepts before the guest's agent runs; what is written early
waits in the channel, and stale answers may arrive later. `guest-sync-delimited` with a
fresh id (and the 0xFF byte that resets the agent's parser) tells a live agent from a
queue: only the answer carrying the latest id counts.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESYNC = b"\xff"
READ_CHUNK = 1 << 20


class GuestAgentError(RuntimeError):
    """The agent answered with an error."""


class GuestAgentTimeout(TimeoutError):
    """No answer in time."""


def next_message(buffer: bytes) -> tuple[dict[str, Any] | None, bytes]:
    """The first complete JSON object in `buffer` and what follows it, or None and the
    buffer. 0xFF (which JSON text never holds) only marks a resync point; a line that does
    not parse (one cut short by a resync) or is no object is skipped."""
    cleaned = buffer.replace(RESYNC, b"\n")
    start = 0
    while (end := cleaned.find(b"\n", start)) >= 0:
        line, start = cleaned[start:end], end + 1
        try:
            message = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(message, dict):
            return message, cleaned[start:]
    return None, cleaned[start:]


@dataclass(frozen=True)
class ExecStatus:
    exited: bool
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    truncated: bool


def exec_status(answer: Mapping[str, Any]) -> ExecStatus:
    return ExecStatus(
        exited=bool(answer.get("exited")),
        exit_code=answer.get("exitcode"),
        signal=answer.get("signal"),
        stdout=base64.b64decode(answer.get("out-data", "")),
        stderr=base64.b64decode(answer.get("err-data", "")),
        truncated=bool(answer.get("out-truncated") or answer.get("err-truncated")),
    )


class GuestAgent:
    """One connection to the agent; every call holds a lock, so threads may share it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._stale = True
        self._ids = itertools.count(random.randrange(1, 1 << 30))

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""

    def _connected(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self._path))
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def _next_message(self, deadline: float) -> dict[str, Any]:
        sock = self._connected()
        while True:
            message, self._buffer = next_message(self._buffer)
            if message is not None:
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuestAgentTimeout("no answer from the guest agent")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(READ_CHUNK)
            except TimeoutError:
                raise GuestAgentTimeout("no answer from the guest agent") from None
            if not chunk:
                self._drop()
                raise GuestAgentError("qemu closed the guest agent's socket")
            self._buffer += chunk

    def _resync(self, deadline: float) -> None:
        token = next(self._ids)
        request = {"execute": "guest-sync-delimited", "arguments": {"id": token}}
        self._connected().sendall(RESYNC + json.dumps(request).encode() + b"\n")
        while self._next_message(deadline).get("return") != token:
            pass
        self._stale = False

    def sync(self, timeout: float) -> bool:
        """True once the agent answers a fresh sync within `timeout` (answers to earlier
        requests are skipped); False if it does not."""
        with self._lock:
            try:
                self._resync(time.monotonic() + timeout)
            except (GuestAgentTimeout, GuestAgentError, OSError):
                self._stale = True
                return False
            return True

    def call(
        self, command: str, arguments: Mapping[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        """Send one command and return its answer's `return` value."""
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = dict(arguments)
        with self._lock:
            deadline = time.monotonic() + timeout
            try:
                if self._stale:
                    # an earlier call gave up: its answer may still come, so skip past it
                    self._resync(deadline)
                self._connected().sendall(json.dumps(request).encode() + b"\n")
                answer = self._next_message(deadline)
            except BaseException:
                self._stale = True
                raise
        if "error" in answer:
            error = answer["error"]
            raise GuestAgentError(f"{command}: {error.get('class')}: {error.get('desc')}")
        return answer.get("return")

    # guest-exec: start, then poll its status until it exits

    def exec_start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        stdin: bytes | None = None,
    ) -> int:
        arguments: dict[str, Any] = {
            "path": argv[0],
            "arg": list(argv[1:]),
            "env": [f"{key}={value}" for key, value in env.items()],
            "capture-output": True,
        }
        if stdin is not None:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        answer = self.call("guest-exec", arguments)
        return int(answer["pid"])

    def exec_wait(self, pid: int, timeout: float) -> ExecStatus:
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            status = exec_status(self.call("guest-exec-status", {"pid": pid}))
            if status.exited:
                return status
            if time.monotonic() + pause > deadline:
                raise GuestAgentTimeout(f"guest process {pid} still running after {timeout} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    # files

    def read_file(self, path: str) -> bytes:
        handle = self.call("guest-file-open", {"path": path, "mode": "r"})
        try:
            data = b""
            while True:
                answer = self.call("guest-file-read", {"handle": handle, "count": READ_CHUNK})
                data += base64.b64decode(answer.get("buf-b64", ""))
                if answer.get("eof") or not answer.get("count"):
                    return data
        finally:
            self.call("guest-file-close", {"handle": handle})

    def write_file(self, path: str, data: bytes) -> None:
        handle = self.call("guest-file-open", {"path": path, "mode": "w"})
        try:
            for start in range(0, len(data), READ_CHUNK):
                chunk = data[start : start + READ_CHUNK]
                self.call(
                    "guest-file-write",
                    {"handle": handle, "buf-b64": base64.b64encode(chunk).decode()},
                )
        finally:
            self.call("guest-file-close", {"handle": handle})
