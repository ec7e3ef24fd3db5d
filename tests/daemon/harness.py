"""Real pieces for daemon-process tests: a control plane on loopback, a NOTIFY_SOCKET
listener, the daemon as a subprocess, and a raw websocket viewer (no daemon code)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from websockets.asyncio.client import ClientConnection, connect

from control_plane.app import bind_socket, create_app, serve_control_plane
from control_plane.identity.tokens import jwks_url
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings
from vm_agent.process.catalog import fake_agent_command
from vm_agent.process.procgroup import group_alive

NODE = "node-1"
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass
class Plane:
    url: str
    plane: ControlPlane

    def viewer_token(self, scopes: tuple[str, ...] = ("read", "write")) -> str:
        return self.plane.tokens.mint_viewer_token(NODE, list(scopes))

    def node_token(self) -> str:
        """The control plane's own connection to the node (every session)."""
        return self.plane.tokens.mint_viewer_token(NODE, ["node"], subject="control-plane")

    def callback_token(self) -> str:
        return self.plane.tokens.mint_callback_token(NODE)


@asynccontextmanager
async def control_plane(state_dir: Path) -> AsyncIterator[Plane]:
    sock = bind_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = ControlPlaneSettings(state_dir=state_dir, public_url=url)
    app = create_app(settings)
    plane = app.state.plane
    try:
        async with serve_control_plane(settings, app=app, sock=sock) as base:
            yield Plane(base, plane)
    finally:
        plane.close()


@dataclass
class Notify:
    """The systemd side of sd_notify: every datagram the daemon sends, in order."""

    path: Path
    messages: list[str] = field(default_factory=list)
    _arrived: anyio.Event = field(default_factory=anyio.Event)

    def fields(self) -> list[str]:
        return [line for m in self.messages for line in m.splitlines()]

    async def wait_for(self, pattern: str, *, start: int = 0, timeout: float = 60) -> re.Match[str]:
        """The first field line matching `pattern` among messages from index `start` on."""
        with anyio.fail_after(timeout):
            while True:
                for message in self.messages[start:]:
                    for line in message.splitlines():
                        if found := re.fullmatch(pattern, line):
                            return found
                await self._arrived.wait()

    def count(self, line: str) -> int:
        return sum(1 for f in self.fields() if f == line)

    async def _receive(self, sock: Any) -> None:
        while True:
            data, _ = await sock.receive()
            self.messages.append(data.decode())
            self._arrived.set()
            self._arrived = anyio.Event()


@asynccontextmanager
async def notify_socket(path: Path) -> AsyncIterator[Notify]:
    notify = Notify(path)
    async with (
        await anyio.create_unix_datagram_socket(local_path=path) as sock,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(notify._receive, sock)
        yield notify
        tg.cancel_scope.cancel()


def base_env() -> dict[str, str]:
    """The test's environment without anything that would configure the daemon."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VM_AGENT_", "FAKE_AGENT_")) and k not in _NOT_INHERITED
    }


def daemon_env(tmp: Path, plane: Plane, **extra: str) -> dict[str, str]:
    env = base_env()
    env.update(
        {
            "VM_AGENT_ENV_FILE": str(tmp / "no-env-file"),
            "VM_AGENT_NODE_ID": NODE,
            "VM_AGENT_CONTROL_PLANE_URL": plane.url,
            "VM_AGENT_JWKS_URL": jwks_url(plane.url),
            "VM_AGENT_CALLBACK_TOKEN_FILE": str(tmp / "callback-token"),
            "VM_AGENT_BOOTSTRAP_TOKEN_FILE": str(tmp / "bootstrap-token"),
            "VM_AGENT_STATE_DIR": str(tmp / "state"),
            "VM_AGENT_LISTEN_HOST": "127.0.0.1",
            "VM_AGENT_LISTEN_PORT": "0",
            "VM_AGENT_LOG_FORMAT": "json",
            # Sessions work under the test's directory, as the daemon's own user (the
            # containment tests, tests/containment/, run them as pool users).
            "VM_AGENT_WORKSPACE_ROOTS": str(tmp),
            "VM_AGENT_AGENTS_AS_ROOT": "1",
        }
    )
    env.update(extra)
    return env


def write_agents_file(tmp: Path, name: str, *fake_args: str) -> Path:
    """An AGENTS_FILE with one fake-agent entry ``name`` run with ``fake_args``."""
    path = tmp / "agents.toml"
    path.write_text(
        f"[agents.{name}]\ncommand = {json.dumps(list(fake_agent_command(*fake_args)))}\n"
    )
    return path


def vm_agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "vm_agent", *args]


async def start_process(argv: list[str], env: dict[str, str], log: Path) -> Process:
    # stderr to a file: a test that fails shows what the daemon said.
    with log.open("ab") as stderr:
        return await anyio.open_process(argv, env=env, stdout=stderr, stderr=stderr)


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry.name))
    return out


async def serving(
    tmp: Path, plane: Plane, notify: Notify, agents: Path, **extra: str
) -> tuple[Process, str]:
    start = len(notify.messages)
    env = daemon_env(
        tmp,
        plane,
        VM_AGENT_AGENTS_FILE=str(agents),
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC="200000",
        **extra,
    )
    process = await start_process(vm_agent("serve"), env, tmp / "daemon.log")
    await notify.wait_for("READY=1", start=start)
    port = (await notify.wait_for(r"STATUS=serving on [^ ]+:(\d+);.*", start=start))[1]
    scheme = "wss" if "VM_AGENT_TLS_CERT_FILE" in extra else "ws"
    return process, f"{scheme}://127.0.0.1:{port}/v1/ws"


@asynccontextmanager
async def stopped_at_exit(process: Process) -> AsyncIterator[Process]:
    """Stops the daemon when the block ends, also when a test fails inside it: SIGTERM (it
    stops its own agents), then SIGKILL if it has not gone within 30 s."""
    try:
        yield process
    finally:
        if process.returncode is None:
            with anyio.CancelScope(shield=True):
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(30):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


async def sigterm_and_wait(process: Process) -> int:
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(60):
        return await process.wait()


async def agent_gone(pgid: int) -> bool:
    # The daemon waits for the group itself; a short grace covers /proc catching up.
    with anyio.move_on_after(5):
        while group_alive(pgid):
            await anyio.sleep(0.05)
    return not group_alive(pgid)


class Viewer:
    """JSON-RPC over a raw websocket, written apart from the daemon's own code."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.answers: dict[int, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []  # other than session/event (port/*)

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, token: str, **options: Any) -> AsyncIterator[Viewer]:
        """options: more of websockets' `connect` (`ssl=`, `server_hostname=` for wss)."""
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(
            url, additional_headers=headers, proxy=None, max_size=None, **options
        ) as ws:
            yield cls(ws)

    async def send(self, method: str, params: dict[str, Any]) -> int:
        msg_id = next(self.ids)
        await self.ws.send(
            json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        )
        return msg_id

    async def receive_one(self) -> None:
        msg = json.loads(await self.ws.recv())
        if "id" in msg:
            self.answers[msg["id"]] = msg
        elif msg.get("method") == "session/event":
            self.events.append(msg["params"])
        elif "method" in msg:
            self.notifications.append(msg)

    async def answer(self, msg_id: int, timeout: float = 60) -> Any:
        with anyio.fail_after(timeout):
            while msg_id not in self.answers:
                await self.receive_one()
        msg = self.answers.pop(msg_id)
        if "error" in msg:
            raise RuntimeError(f"JSON-RPC error: {msg['error']}")
        return msg["result"]

    async def call(self, method: str, params: dict[str, Any], timeout: float = 60) -> Any:
        return await self.answer(await self.send(method, params), timeout)

    async def until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                for event in self.events:
                    if pred(event):
                        return event
                await self.receive_one()
