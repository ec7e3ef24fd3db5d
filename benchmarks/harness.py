"""What the daemon benchmarks share: the control plane, the daemon subprocess, viewers.

The control plane runs in the benchmark process (its JWKS verifies the viewer tokens the
benchmark mints); the daemon runs as `python -m vm_agent serve` in dev mode without a
control-plane link (no callback token), so the figures measure the relay, not the outbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import httpx
import orjson
from anyio.abc import Process, TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from benchmarks import procstat
from control_plane.app import bind_socket, create_app, plane_of_app, serve_control_plane
from control_plane.identity.tokens import TokenIssuer, jwks_url
from control_plane.settings import ControlPlaneSettings

NODE_ID = "bench-node"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
EVENT_PREFIX = '{"jsonrpc":"2.0","method":"session/event","params":{"seq":'


def fake_agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "vm_agent", "fake-agent", *args]


@dataclass(frozen=True)
class ControlPlane:
    url: str
    issuer: TokenIssuer

    def viewer_token(self) -> str:
        return self.issuer.mint_viewer_token(NODE_ID, ["read", "write"], subject="bench")


@contextlib.asynccontextmanager
async def control_plane(state_dir: Path) -> AsyncIterator[ControlPlane]:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings = ControlPlaneSettings(
        state_dir=state_dir, public_url=f"http://127.0.0.1:{port}", key_activation_delay_s=0
    )
    app = create_app(settings)
    try:
        async with serve_control_plane(settings, app=app, sock=sock) as url:
            yield ControlPlane(url, plane_of_app(app).tokens)
    finally:
        plane_of_app(app).close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    proc: Process
    port: int
    state_dir: Path
    log_path: Path
    token: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class AgentCommand(NamedTuple):
    """A whole agent command line, for an agent other than the fake agent."""

    argv: tuple[str, ...]


def agent_argv(agent: Sequence[str] | AgentCommand) -> list[str]:
    """The command line: an `AgentCommand` as it is, else the fake agent with these flags."""
    if isinstance(agent, AgentCommand):
        return list(agent.argv)
    return fake_agent_command(*agent)


def write_agents_file(path: Path, agents: Mapping[str, Sequence[str] | AgentCommand]) -> None:
    """An AGENTS_FILE with one entry per name (value: the fake agent's flags or a command)."""
    out = []
    for name, agent in agents.items():
        out.append(f"[agents.{name}]\ncommand = {json.dumps(agent_argv(agent))}\n")
    path.write_text("\n".join(out))


@contextlib.asynccontextmanager
async def daemon(
    cp: ControlPlane,
    root: Path,
    agents: Mapping[str, Sequence[str] | AgentCommand],
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Daemon]:
    """`vm-agent serve` as a subprocess on a free loopback port; stopped with SIGTERM."""
    await anyio.Path(root).mkdir(parents=True, exist_ok=True)
    agents_file = root / "agents.toml"
    write_agents_file(agents_file, agents)
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("VM_AGENT_", "FAKE_"))}
    environ.update(
        {
            "VM_AGENT_ENV_FILE": "/dev/null",
            "VM_AGENT_DEV_MODE": "1",
            "VM_AGENT_NODE_ID": NODE_ID,
            "VM_AGENT_JWKS_URL": jwks_url(cp.url),
            "VM_AGENT_JWT_ISSUER": cp.issuer.issuer,
            "VM_AGENT_LISTEN_HOST": "127.0.0.1",
            "VM_AGENT_LISTEN_PORT": str(port),
            "VM_AGENT_STATE_DIR": str(root / "state"),
            "VM_AGENT_AGENTS_FILE": str(agents_file),
            "VM_AGENT_LOG_FORMAT": "json",
            # The benchmarks' working directories are the daemon directory's siblings. Agents
            # run as the caller (as root: told so), in session cgroups where there are any.
            "VM_AGENT_WORKSPACE_ROOTS": str(root.parent),
            "VM_AGENT_AGENTS_AS_ROOT": "1",
            # Every benchmark viewer comes from 127.0.0.1, many at once: the flood benchmark
            # sets the caps it measures itself.
            "VM_AGENT_MAX_UNAUTHENTICATED_PER_ADDRESS": "1024",
            "VM_AGENT_MAX_NEW_CONNECTIONS_PER_ADDRESS_PER_S": "100000",
            # One benchmark user starts up to 64 sessions (footprint): past the default caps.
            "VM_AGENT_MAX_SESSIONS": "1024",
            "VM_AGENT_MAX_SESSIONS_PER_OWNER": "1024",
            **(env or {}),
        }
    )
    log_path = root / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = await anyio.open_process(
            [sys.executable, "-m", "vm_agent", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environ,
            start_new_session=True,
        )
    d = Daemon(proc, port, root / "state", log_path, cp.viewer_token())
    try:
        await _wait_healthy(d)
        yield d
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(d)


async def _wait_healthy(d: Daemon) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if d.proc.returncode is not None:
                raise RuntimeError(f"the daemon exited {d.proc.returncode}:\n{d.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"http://127.0.0.1:{d.port}/health")
                if response.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not become healthy:\n{d.log_tail()}")
            await anyio.sleep(0.02)


async def _stop(d: Daemon) -> None:
    if d.proc.returncode is None:
        d.proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(STOP_TIMEOUT_S):
            await d.proc.wait()
    if d.proc.returncode is None:  # never leave a daemon or its agents behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(d.proc.pid, signal.SIGKILL)
        await d.proc.wait()


class RpcFailed(Exception):
    pass


class Received(NamedTuple):
    """One `session/event` as a viewer got it, alone in its frame or in a batch."""

    viewer: Viewer
    session_id: str
    seq: int
    type: str
    frame: str | None  # the frame, when the event came alone in it
    message: dict[str, Any] | None  # the decoded message, when it came in a batch
    at: float  # time.time() at receipt

    def params(self) -> dict[str, Any]:
        """The event (`{seq, session_id, ts, type, data}`)."""
        message = self.message if self.message is not None else json.loads(self.frame or "")
        params: dict[str, Any] = message["params"]
        return params


EventHook = Callable[[Received], None]


@dataclass(eq=False)
class Viewer:
    """A websocket viewer: JSON-RPC requests, and `session/event` frames checked for gaps.

    Event frames are not decoded: seq and type are sliced from the fixed prefix the daemon
    sends (one serialization per event), so the client costs little next to the daemon.
    A viewer connected with `batch` also gets JSON-RPC batches (arrays), decoded whole.
    """

    ws: ClientConnection
    on_event: EventHook | None = None
    last_seq: dict[str, int] = field(default_factory=dict)
    received: int = 0
    gaps: int = 0
    close_code: int | None = None
    close_reason: str = ""
    _next_id: int = 0
    _waiting: dict[int, tuple[anyio.Event, list[Any]]] = field(default_factory=dict)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self._next_id += 1
        rid = self._next_id
        done = anyio.Event()
        slot: list[Any] = []
        self._waiting[rid] = (done, slot)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        await self.ws.send(json.dumps(msg))
        await done.wait()
        answer = slot[0]
        if "error" in answer:
            raise RpcFailed(f"{method}: {answer['error']}")
        return answer.get("result")

    async def start_session(self, agent: str, cwd: Path) -> str:
        described = await self.request("session/start", {"agent": agent, "cwd": str(cwd)})
        return str(described["session_id"])

    async def subscribe(self, session_id: str, after_seq: int = 0) -> int:
        self.last_seq[session_id] = after_seq
        result = await self.request(
            "session/subscribe", {"session_id": session_id, "after_seq": after_seq}
        )
        return int(result["head_seq"])

    async def prompt(self, session_id: str, text: str, prompt_id: str) -> dict[str, Any]:
        params = {
            "session_id": session_id,
            "prompt_id": prompt_id,
            "prompt": [{"type": "text", "text": text}],
        }
        outcome: dict[str, Any] = await self.request("session/prompt", params)
        return outcome

    async def head_seq(self, session_id: str) -> int:
        listed = await self.request("session/list")
        for s in listed["sessions"]:
            if s["session_id"] == session_id:
                return int(s["head_seq"])
        raise RpcFailed(f"no session {session_id}")

    def _on_frame(self, frame: str) -> None:
        now = time.time()
        if frame.startswith(EVENT_PREFIX):
            start = len(EVENT_PREFIX)
            comma = frame.index(",", start)
            seq = int(frame[start:comma])
            sid_start = comma + len(',"session_id":"')
            sid = frame[sid_start : frame.index('"', sid_start)]
            type_at = frame.index(',"type":"', sid_start) + len(',"type":"')
            etype = frame[type_at : frame.index('"', type_at)]
            self._event(Received(self, sid, seq, etype, frame, None, now))
            return
        decoded = orjson.loads(frame)  # batches: the viewers must not be what is measured
        for msg in decoded if isinstance(decoded, list) else (decoded,):
            if msg.get("method") == "session/event":
                event = msg["params"]
                self._event(
                    Received(self, event["session_id"], event["seq"], event["type"], None, msg, now)
                )
                continue
            rid = msg.get("id")
            if isinstance(rid, int) and rid in self._waiting:
                done, slot = self._waiting.pop(rid)
                slot.append(msg)
                done.set()

    def _event(self, got: Received) -> None:
        self.received += 1
        last = self.last_seq.get(got.session_id, 0)
        if got.seq != last + 1:
            self.gaps += 1
        self.last_seq[got.session_id] = got.seq
        if self.on_event is not None:
            self.on_event(got)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self._on_frame(frame if isinstance(frame, str) else frame.decode())
        except ConnectionClosed:
            pass
        finally:
            if self.ws.protocol.close_rcvd is not None:
                self.close_code = self.ws.protocol.close_rcvd.code
                self.close_reason = self.ws.protocol.close_rcvd.reason
            for done, slot in self._waiting.values():
                slot.append({"error": {"message": f"connection closed ({self.close_code})"}})
                done.set()
            self._waiting.clear()


@contextlib.asynccontextmanager
async def viewer(
    tg: TaskGroup, d: Daemon, on_event: EventHook | None = None, *, batch: bool = False
) -> AsyncIterator[Viewer]:
    """A connected, authenticated viewer whose reader runs in `tg` until the block exits.

    `batch` connects with `?batch=1`: busy streams then come as JSON-RPC batches.
    """
    async with connect(
        d.url + ("?batch=1" if batch else ""),
        additional_headers={"Authorization": f"Bearer {d.token}"},
        compression=None,
        max_size=64 * 1024 * 1024,
        open_timeout=START_TIMEOUT_S,
    ) as ws:
        v = Viewer(ws, on_event)
        tg.start_soon(v._read)
        yield v


def prompt_id(prefix: str) -> str:
    return f"{prefix}-{os.urandom(6).hex()}"


@dataclass
class CpuWatch:
    """CPU shares (of one core) of the daemon and of this process (the viewers) meanwhile."""

    daemon_pid: int
    daemon: list[float] = field(default_factory=list)
    viewers: list[float] = field(default_factory=list)

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        d0, v0, t0 = procstat.cpu_seconds(self.daemon_pid), time.process_time(), time.monotonic()
        yield
        wall = max(time.monotonic() - t0, 1e-9)
        self.daemon.append((procstat.cpu_seconds(self.daemon_pid) - d0) / wall)
        self.viewers.append((time.process_time() - v0) / wall)

    def describe(self) -> str:
        if not self.daemon:
            return ""
        return (
            f"daemon CPU {statistics.median(self.daemon):.0%}, viewers' process "
            f"{statistics.median(self.viewers):.0%} of one core"
        )


@dataclass(frozen=True)
class Context:
    """What every benchmark gets: the control plane, a scratch directory, a progress printer."""

    cp: ControlPlane
    root: Path
    scale: str  # "smoke", "quick" or "full"
    say: Callable[[str], None]

    def scratch(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class Progress:
    """Counts one kind of event per viewer and notes when every viewer reached a target."""

    def __init__(self, etype: str, viewers: int) -> None:
        self.etype = etype
        self.counts = [0] * viewers
        self.target = 0
        self.reached = 0
        self.done = anyio.Event()
        self.finished_at = 0.0
        self.index: dict[int, int] = {}

    def bind(self, v: Viewer) -> None:
        self.index[id(v)] = len(self.index)

    def expect(self, more: int) -> None:
        self.target = max(self.counts) + more if self.counts else more
        self.reached = sum(1 for c in self.counts if c >= self.target)
        self.done = anyio.Event()

    def hook(self, got: Received) -> None:
        if got.type != self.etype:
            return
        i = self.index[id(got.viewer)]
        self.counts[i] += 1
        if self.counts[i] == self.target:
            self.reached += 1
            if self.reached == len(self.counts):
                self.finished_at = got.at
                self.done.set()
