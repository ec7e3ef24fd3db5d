"""The real control plane on loopback, a callback token file, and a daemon's settings."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.app import bind_socket, create_app, serve_control_plane
from control_plane.dispatch import sessions
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings
from tests.faults import EventFaultMiddleware, EventFaults
from vm_agent.control_link import LinkTimings, RetryPolicy
from vm_agent.runtime.settings import Settings

NODE = "node-a"

FAST_TIMINGS = LinkTimings(
    retry=RetryPolicy(attempts=3, initial_s=0.05, max_s=0.2, timeout_s=5.0, connect_timeout_s=2.0),
    ready_backoff_initial_s=0.05,
    outbox_backoff_initial_s=0.05,
    outbox_backoff_max_s=0.3,
    outbox_idle_wait_s=5.0,
)


class AuthRecorder:
    """ASGI middleware that notes (path, bearer) of each request: to see which token went,
    and (path, monotonic time) of each: to see how often calls come."""

    def __init__(
        self, app: ASGIApp, seen: list[tuple[str, str]], times: list[tuple[str, float]]
    ) -> None:
        self.app = app
        self.seen = seen
        self.times = times

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization", b"").decode()
            self.seen.append((str(scope["path"]), auth.removeprefix("Bearer ")))
            self.times.append((str(scope["path"]), time.monotonic()))
        await self.app(scope, receive, send)


@dataclass
class Plane:
    settings: ControlPlaneSettings
    app: Starlette
    port: int
    seen: list[tuple[str, str]] = field(default_factory=list)
    # FAULT INJECTION (a test-only wrapper of the app): off until a test switches it on.
    faults: EventFaults = field(default_factory=EventFaults)
    times: list[tuple[str, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def plane(self) -> ControlPlane:
        plane = self.app.state.plane
        assert isinstance(plane, ControlPlane)
        return plane

    def make_session(self, agent: str, node_id: str = NODE) -> str:
        """A session the control plane made on the node (as an admin's call would): only
        for such a session does it hand out the agent's credentials. Returns its id."""
        session = sessions.AgentSession(
            session_id=sessions.new_session_id(),
            node_id=node_id,
            agent=agent,
            owner="admin",
            workspace_id=None,
            created_by="admin",
            created_at=time.time(),
        )
        return sessions.make_session(self.plane.engine, session).session_id

    def callback_token(self, node_id: str = NODE, *, age_s: float = 0, ttl_s: int = 600) -> str:
        """A callback token minted `age_s` ago (so past half its life, or expired)."""
        issuer = self.plane.tokens.with_clock(lambda: time.time() - age_s)
        return issuer.mint_callback_token(node_id, ttl_s)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve (again) on the same port: a stop and a restart of the same control plane."""
        sock = bind_socket("127.0.0.1", self.port)
        async with serve_control_plane(self.settings, app=self.app, sock=sock) as url:
            yield url

    async def events(self, node_id: str = NODE) -> list[dict[str, Any]]:
        admin = self.plane.tokens.mint_user_token("admin", admin=True)
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(
                f"{self.url}/api/nodes/{node_id}/events",
                headers={"Authorization": f"Bearer {admin}"},
            )
        r.raise_for_status()
        events: list[dict[str, Any]] = r.json()["events"]
        return events

    async def node(self, node_id: str = NODE) -> dict[str, Any]:
        admin = self.plane.tokens.mint_user_token("admin", admin=True)
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(
                f"{self.url}/api/nodes/{node_id}", headers={"Authorization": f"Bearer {admin}"}
            )
        r.raise_for_status()
        node: dict[str, Any] = r.json()
        return node


@asynccontextmanager
async def control_plane(tmp_path: Path, secrets: str | None = None) -> AsyncIterator[Plane]:
    """A control plane served on a free loopback port (heartbeat interval 1 s)."""
    secrets_file = None
    if secrets is not None:
        secrets_file = tmp_path / "secrets.json"
        secrets_file.write_text(secrets)
        secrets_file.chmod(0o600)  # the control plane refuses a file others may read
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "cp-state",
        public_url="http://127.0.0.1:1",  # only the `iss` claim
        secrets_file=secrets_file,
        callback_token_ttl_s=600,
        viewer_token_ttl_s=300,
        user_token_ttl_s=300,
        key_activation_delay_s=0,
        heartbeat_interval_s=1,
    )
    app = create_app(settings)
    probe = bind_socket("127.0.0.1", 0)
    port = int(probe.getsockname()[1])
    probe.close()
    cp = Plane(settings, app, port)
    app.add_middleware(AuthRecorder, seen=cp.seen, times=cp.times)
    app.add_middleware(EventFaultMiddleware, faults=cp.faults)
    try:
        yield cp
    finally:
        cp.plane.close()


def daemon_settings(tmp_path: Path, url: str, *, node_id: str = NODE) -> Settings:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True, mode=0o700)
    return Settings(
        node_id=node_id,
        control_plane_url=url,
        jwks_url=f"{url}/.well-known/jwks.json",
        callback_token_file=tmp_path / "callback-token",
        state_dir=state,
        heartbeat_interval_s=0.5,
    )
