"""A real control plane, event log, supervisor with fake agents and viewer server on loopback."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection, connect

from control_plane.app import bind_socket, create_app, serve_control_plane
from control_plane.identity.tokens import TokenIssuer
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings
from tests.control_link.harness import FAST_TIMINGS, AuthRecorder
from tests.tlsca import TlsFiles, make_tls_files
from tests.token_files import write_token
from vm_agent.common.redact import Redactor
from vm_agent.containment.host import Containment
from vm_agent.control_link import CallbackTokenStore, ControlLink
from vm_agent.core.machine import SessionPolicy
from vm_agent.daemon.assembly import start_policy
from vm_agent.edge.auth import JwksVerifier
from vm_agent.edge.tls import server_context
from vm_agent.eventlog import EventLog
from vm_agent.process.agent_process import StopTimings
from vm_agent.process.catalog import AgentSpec, Catalog, fake_agent_command
from vm_agent.runtime.metrics import Metrics
from vm_agent.runtime.settings import Settings
from vm_agent.server import ViewerServer
from vm_agent.session.config import SessionConfig
from vm_agent.session.supervisor import Supervisor

NODE = "node-1"


def fake(scenario: str, *args: str, name: str | None = None) -> AgentSpec:
    return AgentSpec(
        name=name or scenario, command=fake_agent_command("--scenario", scenario, *args)
    )


def text(value: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value}]


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('message')} ({error.get('code')})")
        self.code: int = error["code"]
        self.message: str = error["message"]
        self.data = error.get("data")


@dataclass
class Client:
    """A bare JSON-RPC viewer over a real websocket client."""

    ws: ClientConnection
    events: list[dict[str, Any]] = field(default_factory=list)
    batches: int = 0  # frames that held a JSON-RPC batch (viewers connected with batch=1)
    _ids: int = 0
    _inbox: deque[dict[str, Any]] = field(default_factory=deque)

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(obj))

    async def recv(self) -> dict[str, Any]:
        """The next message, whether it came alone or in a batch frame."""
        if not self._inbox:
            decoded = json.loads(await self.ws.recv())
            if isinstance(decoded, list):
                assert len(decoded) > 1, "a batch frame holds two messages or more"
                self.batches += 1
                self._inbox.extend(decoded)
            else:
                self._inbox.append(decoded)
        return self._inbox.popleft()

    async def request(self, method: str, params: Any = None) -> dict[str, Any]:
        """Sends a request; returns the whole answer (notifications met meanwhile are kept)."""
        self._ids += 1
        msg_id = self._ids
        req: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            req["params"] = params
        await self.send(req)
        return await self.answer(msg_id)

    async def answer(self, msg_id: int | str) -> dict[str, Any]:
        while True:
            msg = await self.recv()
            if msg.get("method") == "session/event":
                self.events.append(msg["params"])
            elif msg.get("id") == msg_id:
                return msg

    async def call(self, method: str, params: Any = None) -> Any:
        msg = await self.request(method, params)
        if "error" in msg:
            raise RpcError(msg["error"])
        return msg["result"]

    async def events_until(self, seq: int) -> list[dict[str, Any]]:
        """Reads notifications until one with ``seq`` (or later) has arrived."""
        while not self.events or self.events[-1]["seq"] < seq:
            msg = await self.recv()
            if msg.get("method") == "session/event":
                self.events.append(msg["params"])
        return self.events

    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]


@dataclass
class Daemon:
    url: str  # ws://127.0.0.1:PORT/v1/ws (wss:// with TLS)
    http_url: str
    tokens: TokenIssuer
    issuer: str
    server: ViewerServer
    supervisor: Supervisor
    log: EventLog
    metrics: Metrics
    workdir: Path
    port: int
    plane: ControlPlane
    tls: TlsFiles | None = None
    # (path, bearer) of each request the control plane got
    cp_requests: list[tuple[str, str]] = field(default_factory=list)

    def token(
        self, *scopes: str, node: str = NODE, ttl_s: int = 300, subject: str = "dev-viewer"
    ) -> str:
        return self.tokens.mint_viewer_token(
            node, list(scopes or ("read", "write")), ttl_s, subject=subject
        )

    @asynccontextmanager
    async def viewer(
        self, token: str | None = None, *, bearer: bool = True, batch: bool = False, **kw: Any
    ) -> AsyncIterator[Client]:
        tok = token if token is not None else self.token()
        if bearer:
            kw.setdefault("additional_headers", {"Authorization": f"Bearer {tok}"})
        kw.setdefault("max_size", None)
        if self.tls is not None:
            kw.setdefault("ssl", self.tls.client_context())
        async with connect(self.url + ("?batch=1" if batch else ""), **kw) as ws:
            yield Client(ws)

    async def start(self, client: Client, agent: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await client.call(
            "session/start", {"agent": agent, "cwd": str(self.workdir), **params}
        )
        return result


@asynccontextmanager
async def daemon(
    tmp_path: Path,
    agents: list[AgentSpec] | None = None,
    *,
    queue_limit: int = 10_000,
    max_frame_bytes: int = 64 * 1024,
    auth_timeout_s: float = 10.0,
    retention_bytes: int = 64 * 1024 * 1024,
    tls: bool = False,
    leeway_s: float = 30.0,
    link: bool = False,
    secrets: dict[str, dict[str, str]] | None = None,
    containment: Containment | None = None,
    **settings_over: Any,
) -> AsyncIterator[Daemon]:
    """``tls`` makes a throwaway CA and serves wss:// with its certificate; ``leeway_s`` is
    the verifier's; ``link`` runs the daemon's control-plane link (a callback token, the
    session details and credentials a node gets; ``secrets``: the control plane's agent
    credentials); ``containment`` runs the agents confined (tests/containment/ makes one);
    ``settings_over`` sets other daemon settings (caps, metrics port)."""
    workdir = tmp_path / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    # Every test client comes from 127.0.0.1, many at once: caps are the flood tests' own.
    settings_over.setdefault("max_unauthenticated_per_address", 128)
    settings_over.setdefault("max_new_connections_per_address_per_s", 1e6)
    # The same node size wherever the tests run (a reservation's caps default to the machine).
    settings_over.setdefault("session_max_memory_mb", 64 * 1024)
    settings_over.setdefault("session_max_cpu_millis", 16_000)
    sock = bind_socket("127.0.0.1", 0)
    cp_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    secrets_file = None
    if secrets is not None:
        secrets_file = tmp_path / "cp-secrets.json"
        secrets_file.write_text(json.dumps(secrets))
        secrets_file.chmod(0o600)  # the control plane refuses one others may read
    cp_settings = ControlPlaneSettings(
        state_dir=tmp_path / "cp",
        public_url=cp_url,
        key_activation_delay_s=0,
        secrets_file=secrets_file,
    )
    app = create_app(cp_settings)
    cp_requests: list[tuple[str, str]] = []
    app.add_middleware(AuthRecorder, seen=cp_requests, times=[])
    if link:
        settings_over.update(
            control_plane_url=cp_url, callback_token_file=tmp_path / "callback-token"
        )
    settings = Settings(
        node_id=NODE,
        dev_mode=True,
        state_dir=tmp_path / "state",
        viewer_queue_limit=queue_limit,
        max_frame_bytes=max_frame_bytes,
        **settings_over,
    )
    tls_files = make_tls_files(tmp_path / "tls") if tls else None
    config = SessionConfig(
        policy=SessionPolicy(cancel_grace_s=1.0, backoff_base_s=0.05),
        stop_timings=StopTimings(stdin_grace_s=0.3, term_grace_s=1.0),
        start_timeout_s=20,
    )
    catalog = Catalog({a.name: a for a in agents or [fake("echo")]})
    metrics = Metrics()
    async with (
        serve_control_plane(cp_settings, app=app, sock=sock),
        EventLog.open(settings.event_log_path, retention_bytes_per_session=retention_bytes) as log,
    ):
        verifier = JwksVerifier(
            jwks_url=f"{cp_url}/.well-known/jwks.json",
            issuer=cp_url,
            node_id=NODE,
            leeway_s=leeway_s,
        )
        redactor = Redactor()
        supervisor = Supervisor(
            log=log,
            catalog=catalog,
            config=config,
            redactor=redactor,
            policy=start_policy(settings),
            containment=containment,
        )
        plane: ControlPlane = app.state.plane
        control_link = None
        if link:
            token = plane.tokens.mint_callback_token(NODE, 600)
            tokens = CallbackTokenStore.load(
                write_token(settings.callback_token_file, token), redactor=redactor
            )
            control_link = ControlLink(
                settings, log, supervisor, tokens, redactor=redactor, timings=FAST_TIMINGS
            )
            supervisor.credentials = control_link.credentials_provider
            supervisor.session_details = control_link.session_details
        server = ViewerServer(
            settings=settings,
            supervisor=supervisor,
            log=log,
            verifier=verifier,
            metrics=metrics,
            health=lambda: {"control_plane": "connected"},
            auth_timeout_s=auth_timeout_s,
            ssl_context=(
                server_context(tls_files.cert_file, tls_files.key_file) if tls_files else None
            ),
        )
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                if control_link is not None:
                    await tg.start(control_link.run)
                port = await tg.start(server.serve, "127.0.0.1", 0)
                try:
                    scheme = "s" if tls_files else ""
                    yield Daemon(
                        url=f"ws{scheme}://127.0.0.1:{port}/v1/ws",
                        http_url=f"http{scheme}://127.0.0.1:{port}",
                        tokens=app.state.plane.tokens,
                        issuer=cp_url,
                        server=server,
                        supervisor=supervisor,
                        log=log,
                        metrics=metrics,
                        workdir=workdir,
                        port=port,
                        plane=plane,
                        tls=tls_files,
                        cp_requests=cp_requests,
                    )
                finally:
                    with anyio.CancelScope(shield=True):
                        server.stop_accepting()
                        await server.close_viewers()
                        await supervisor.shutdown(15)
                    tg.cancel_scope.cancel()
        finally:
            await verifier.aclose()


def metric_value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def now() -> float:
    return time.time()


async def settled_head(d: Daemon, session_id: str) -> int:
    """The head seq once the session is idle again and everything is durable."""
    session = d.supervisor.get(session_id)
    with anyio.fail_after(20):
        while session.state.value in ("starting", "prompting", "cancelling", "recovering"):
            await anyio.sleep(0.01)
    await anyio.sleep(0.05)
    await d.log.flush()
    return d.log.head_seq(session_id)


def prompt_request(msg_id: str, session_id: str, words: str, prompt_id: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "session/prompt",
        "params": {"session_id": session_id, "prompt": text(words), "prompt_id": prompt_id},
    }
