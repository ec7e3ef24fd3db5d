"""Real pieces for the gateway's tests: `vm-agent serve` on loopback with fake agents, the
gateway as a subprocess, and an ACP client of the test's own over its real pipes."""

from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from tests.daemon.harness import (
    Plane,
    base_env,
    control_plane,
    notify_socket,
    serving,
    stopped_at_exit,
    vm_agent,
)
from tests.token_files import write_token
from vm_agent.process.catalog import fake_agent_command

RequestHandler = Callable[[str, Any], Awaitable[Any]]


@dataclass
class Daemon:
    url: str
    plane: Plane
    process: Process
    work: Path  # a directory under the daemon's workspace root


@asynccontextmanager
async def daemon(
    tmp: Path, agents: dict[str, tuple[str, ...]], **extra: str
) -> AsyncIterator[Daemon]:
    """`vm-agent serve` with one fake-agent catalog entry per name (its flags); ``extra``:
    more of its settings (``VM_AGENT_TLS_CERT_FILE=...``)."""
    work = tmp / "work"
    work.mkdir()
    catalog = tmp / "agents.toml"
    catalog.write_text(
        "".join(
            f"[agents.{name}]\ncommand = {json.dumps(list(fake_agent_command(*flags)))}\n"
            for name, flags in agents.items()
        )
    )
    with tempfile.TemporaryDirectory(prefix="vmag-") as short:
        async with (
            control_plane(tmp / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(tmp / "callback-token", plane.callback_token())
            process, url = await serving(tmp, plane, notify, catalog, **extra)
            async with stopped_at_exit(process):
                yield Daemon(url, plane, process, work)


class AcpClient:
    """An ACP client speaking line-delimited JSON-RPC to the gateway's stdin/stdout."""

    def __init__(self, process: Process, on_request: RequestHandler | None) -> None:
        self.process = process
        self.on_request = on_request
        self.ids = itertools.count(1)
        self.notifications: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []  # what the gateway asked of us
        self._answers: dict[Any, dict[str, Any]] = {}
        self._arrived = anyio.Event()
        self.lines: list[bytes] = []

    def updates(self, session_id: str | None = None) -> list[dict[str, Any]]:
        return [
            n["params"]
            for n in self.notifications
            if n.get("method") == "session/update"
            and (session_id is None or n["params"].get("sessionId") == session_id)
        ]

    async def send_line(self, line: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(line + b"\n")

    async def send(self, method: str, params: Any, *, notify: bool = False) -> int:
        msg_id = next(self.ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if not notify:
            msg["id"] = msg_id
        await self.send_line(json.dumps(msg).encode())
        return msg_id

    async def answer(self, msg_id: int | str | None, timeout: float = 60) -> dict[str, Any]:
        """The whole answer message (with `result` or `error`)."""
        with anyio.fail_after(timeout):
            while msg_id not in self._answers:
                await self._arrived.wait()
        return self._answers.pop(msg_id)

    async def call(self, method: str, params: Any, timeout: float = 60) -> Any:
        reply = await self.answer(await self.send(method, params), timeout)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    async def read(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        assert self.process.stdout is not None
        buffer = b""
        task_status.started()
        async with anyio.create_task_group() as tg:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                async for chunk in self.process.stdout:
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for line in complete:
                        self.lines.append(line)
                        self._dispatch(json.loads(line), tg)
            self._wake()

    def _dispatch(self, msg: dict[str, Any], tg: anyio.abc.TaskGroup) -> None:
        if "method" in msg and "id" in msg:
            self.requests.append(msg)
            tg.start_soon(self._reply, msg)
        elif "method" in msg:
            self.notifications.append(msg)
        else:
            self._answers[msg.get("id")] = msg
        self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = anyio.Event()

    async def _reply(self, msg: dict[str, Any]) -> None:
        if self.on_request is None:
            reply: dict[str, Any] = {"error": {"code": -32601, "message": "not here"}}
        else:
            reply = {"result": await self.on_request(msg["method"], msg["params"])}
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self.send_line(json.dumps({"jsonrpc": "2.0", "id": msg["id"], **reply}).encode())

    async def until(self, pred: Callable[[], bool], timeout: float = 60) -> None:
        with anyio.fail_after(timeout):
            while not pred():
                await self._arrived.wait()

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()


@asynccontextmanager
async def gateway(
    tmp: Path, url: str, token: str, *args: str, on_request: RequestHandler | None = None
) -> AsyncIterator[AcpClient]:
    """`vm-agent acp` with these flags, driven by an ``AcpClient``; stderr goes to a file."""
    async with acp_gateway(tmp, "--url", url, "--token", token, *args, on_request=on_request) as c:
        yield c


@asynccontextmanager
async def acp_gateway(
    tmp: Path, *args: str, on_request: RequestHandler | None = None
) -> AsyncIterator[AcpClient]:
    """`vm-agent acp` with exactly these flags (``gateway`` adds --url and --token)."""
    argv = vm_agent("acp", *args)
    log = tmp / "gateway.err"
    with log.open("ab") as err:
        process = await anyio.open_process(argv, env=base_env(), stderr=err)
    client = AcpClient(process, on_request)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(client.read)
            yield client
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                with contextlib.suppress(OSError):
                    await client.close_stdin()
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


def allow(options: list[dict[str, Any]]) -> dict[str, Any]:
    """The client's choice: the first allow option."""
    chosen = next(o for o in options if str(o.get("kind", "")).startswith("allow"))
    return {"outcome": {"outcome": "selected", "optionId": chosen["optionId"]}}


INIT = {
    "protocolVersion": 1,
    "clientCapabilities": {"fs": {"readTextFile": False, "writeTextFile": False}},
    "clientInfo": {"name": "test-client", "version": "1"},
}
