"""The fake agent's own line-delimited JSON-RPC 2.0 peer over stdin and stdout.

Deliberately independent of `vm_agent.jsonrpc`: the fake agent is the daemon's
counterpart, and two separate implementations test each other better.

Writes are plain blocking `os.write` calls from the event loop: they keep
messages in order without a lock and are the fastest path for floods. Reads
wait for readability first so that a prompt can stream while `session/cancel`
is still being read.
"""

from __future__ import annotations

import contextlib
import json
import os
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

MAX_LINE_BYTES = 64 * 1024 * 1024
_READ_SIZE = 1 << 16

RequestHandler = Callable[[str, Any], Awaitable[Any]]
NotificationHandler = Callable[[str, Any], None]
ArrivalHook = Callable[[str, Any], None]


class RpcError(Exception):
    """Raised by a request handler: becomes a JSON-RPC error answer."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class PeerClosed(Exception):
    """The client went away: stdin reached EOF or stdout is broken."""


class ClientCallError(Exception):
    """The client answered one of our requests with a JSON-RPC error."""

    def __init__(self, method: str, code: object, message: object) -> None:
        super().__init__(f"{method} failed: {code} {message}")
        self.method = method
        self.code = code
        self.message = str(message)


def log(text: str) -> None:
    """One line to stderr, unbuffered (it must survive an `os._exit` right after)."""
    with contextlib.suppress(OSError):  # a closed stderr must not break the protocol
        write_all(2, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class _Pending:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.response: dict[str, Any] | None = None


class LinePeer:
    """JSON-RPC over two file descriptors, one JSON object per line."""

    def __init__(self, in_fd: int = 0, out_fd: int = 1) -> None:
        self._in_fd = in_fd
        self._out_fd = out_fd
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._read_in_thread = False
        self._stdout_dropped = False  # closed by us on purpose: sends become no-ops
        self.stdout_broken = anyio.Event()

    # -- output --------------------------------------------------------------

    def write_raw(self, data: bytes | bytearray) -> None:
        """Write bytes as they are (for garbage lines and pre-encoded floods)."""
        if self._stdout_dropped:
            return
        if self.stdout_broken.is_set():
            raise PeerClosed("stdout is broken")
        try:
            write_all(self._out_fd, data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.stdout_broken.set()
            raise PeerClosed("stdout is broken") from exc

    def send(self, message: dict[str, Any]) -> None:
        self.write_raw(encode(message))

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def close_stdout(self) -> None:
        """Close our end of the stdout pipe while keeping fd 1 occupied.

        dup2 of /dev/null over the descriptor closes the pipe (the client sees
        EOF) without leaving fd 1 free for a later open() to take over.
        """
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._out_fd)
        finally:
            os.close(devnull)
        self._stdout_dropped = True

    async def request(self, method: str, params: Any) -> Any:
        """Send a request to the client and wait for its answer."""
        request_id = self._next_id
        self._next_id += 1
        pending = _Pending()
        self._pending[request_id] = pending
        try:
            self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        response = pending.response
        if response is None:
            raise PeerClosed(f"client closed before answering {method}")
        if "error" in response:
            error = response["error"]
            if isinstance(error, dict):
                raise ClientCallError(method, error.get("code"), error.get("message"))
            raise ClientCallError(method, None, error)
        return response.get("result")

    # -- input ---------------------------------------------------------------

    async def serve(
        self,
        task_group: anyio.abc.TaskGroup,
        on_request: RequestHandler,
        on_notification: NotificationHandler,
        on_request_arrival: ArrivalHook | None = None,
    ) -> None:
        """Read and dispatch messages until stdin reaches EOF.

        Each request runs in its own task (a prompt streams while the reader
        goes on and sees `session/cancel`); notifications and answers are
        handled inline, in arrival order. `on_request_arrival` sees each request
        in arrival order too, before its task starts (a prompt's cancel must not
        overtake it).
        """
        buffer = bytearray()
        try:
            while True:
                data = await self._read()
                if not data:
                    break
                buffer += data
                start = 0
                while (end := buffer.find(b"\n", start)) >= 0:
                    line = bytes(buffer[start:end])
                    start = end + 1
                    self._dispatch(
                        line, task_group, on_request, on_notification, on_request_arrival
                    )
                del buffer[:start]
                if len(buffer) > MAX_LINE_BYTES:
                    log(f"fake-agent: dropping an input line over {MAX_LINE_BYTES} bytes")
                    buffer.clear()
        finally:
            for pending in self._pending.values():
                pending.done.set()

    async def _read(self) -> bytes:
        if not self._read_in_thread:
            try:
                await anyio.wait_readable(self._in_fd)
            except (OSError, ValueError, NotImplementedError):
                # A regular file or /dev/null cannot be polled: read from a thread.
                self._read_in_thread = True
            else:
                return os.read(self._in_fd, _READ_SIZE)
        return await anyio.to_thread.run_sync(
            os.read, self._in_fd, _READ_SIZE, abandon_on_cancel=True
        )

    def _dispatch(
        self,
        line: bytes,
        task_group: anyio.abc.TaskGroup,
        on_request: RequestHandler,
        on_notification: NotificationHandler,
        on_request_arrival: ArrivalHook | None,
    ) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except ValueError:
            self._answer_error(None, RpcError(-32700, "Parse error"))
            return
        if not isinstance(message, dict):
            self._answer_error(None, RpcError(-32600, "Invalid Request: not an object"))
            return
        method = message.get("method")
        if isinstance(method, str):
            params = message.get("params")
            if "id" in message:
                if on_request_arrival is not None:
                    on_request_arrival(method, params)
                task_group.start_soon(self._answer, message["id"], method, params, on_request)
            else:
                on_notification(method, params)
            return
        request_id = message.get("id")
        pending = self._pending.get(request_id) if isinstance(request_id, int) else None
        if pending is not None:
            pending.response = message
            pending.done.set()
        else:
            log(f"fake-agent: ignoring an unexpected message: {line[:200]!r}")

    async def _answer(
        self, request_id: Any, method: str, params: Any, on_request: RequestHandler
    ) -> None:
        try:
            result = await on_request(method, params)
        except RpcError as exc:
            self._answer_error(request_id, exc)
            return
        except PeerClosed:
            return
        except Exception as exc:
            log("fake-agent: handler failed:\n" + traceback.format_exc())
            self._answer_error(request_id, RpcError(-32603, f"Internal error: {exc}"))
            return
        with contextlib.suppress(PeerClosed):
            self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def _answer_error(self, request_id: Any, error: RpcError) -> None:
        with contextlib.suppress(PeerClosed):
            self.send({"jsonrpc": "2.0", "id": request_id, "error": error.to_json()})
