"""A control plane served on loopback with an httpx client, for API tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from control_plane.app import create_app, serve_control_plane
from control_plane.dispatch import sessions
from control_plane.identity.keys import Clock
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings
from tests.faults import EventFaultMiddleware, EventFaults


@dataclass
class Running:
    url: str
    plane: ControlPlane
    client: httpx.AsyncClient

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def callback(self, node_id: str) -> dict[str, str]:
        return self.bearer(self.plane.tokens.mint_callback_token(node_id))

    def admin(self) -> dict[str, str]:
        return self.bearer(self.plane.tokens.mint_user_token("admin", admin=True))

    def user(self, user_id: str) -> dict[str, str]:
        return self.bearer(self.plane.tokens.mint_user_token(user_id))

    def make_session(self, node_id: str, agent: str, *, session_id: str | None = None) -> str:
        """A session the control plane knows runs `agent` on `node_id` (as an admin's call
        would make it); returns its id."""
        session = sessions.AgentSession(
            session_id=session_id or sessions.new_session_id(),
            node_id=node_id,
            agent=agent,
            owner="admin",
            workspace_id=None,
            created_by="admin",
            created_at=self.plane.clock(),
        )
        return sessions.make_session(self.plane.engine, session).session_id

    async def ready(self, node_id: str, cpus: int = 4, mem_gb: int = 8, disk_gb: int = 80) -> None:
        """The node reports `ready` with this capacity (as the daemon's control link does)."""
        capacity = {
            "cpus": cpus,
            "mem_total_bytes": mem_gb * 2**30,
            "disk_total_bytes": disk_gb * 2**30,
        }
        r = await self.client.post(
            f"/api/nodes/{node_id}/ready",
            json={"version": "0.1.0", "capacity": capacity},
            headers=self.callback(node_id),
        )
        assert r.status_code == 200, r.text

    async def put_defaults(
        self, kind: str, layer_id: str, requirements: dict[str, Any], user: str = "admin"
    ) -> dict[str, Any]:
        headers = self.admin() if user == "admin" else self.user(user)
        r = await self.client.put(
            f"/api/defaults/{kind}/{layer_id}", json={"requirements": requirements}, headers=headers
        )
        assert r.status_code in (200, 201), r.text
        body: dict[str, Any] = r.json()
        return body


@asynccontextmanager
async def running(
    settings: ControlPlaneSettings,
    clock: Clock = time.time,
    *,
    faults: EventFaults | None = None,
) -> AsyncIterator[Running]:
    app = create_app(settings, clock=clock)
    if faults is not None:
        app.add_middleware(EventFaultMiddleware, faults=faults)
    plane = app.state.plane
    try:
        async with (
            serve_control_plane(settings, app=app) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            yield Running(url, plane, client)
    finally:
        plane.close()


@contextmanager
def foreign_plane(tmp_path: Path, settings: ControlPlaneSettings) -> Iterator[ControlPlane]:
    """Another control plane (its own SQLite, its own keys): what it mints is not ours."""
    other = settings.model_copy(
        update={"state_dir": tmp_path / "foreign-plane", "database_url": None}
    )
    plane = ControlPlane.open(other)
    try:
        yield plane
    finally:
        plane.close()
