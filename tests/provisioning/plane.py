"""A control plane with artifacts on a port chosen (and bound, not yet listening) up front,
so a daemon can be pointed at it before it answers: connections are refused until then."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from control_plane.app import create_app, serve_control_plane
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings
from tests.cloud_init.helpers import files_by_path
from tests.provisioning.fixtures import BuiltArtifacts

DOMAIN = "nodes.test.internal"


def reserved_port() -> socket.socket:
    """Bound to a free loopback port but not listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def plane_settings(state_dir: Path, port: int, artifacts: BuiltArtifacts) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        state_dir=state_dir,
        public_url=f"http://127.0.0.1:{port}",
        artifacts_dir=artifacts.directory,
        node_domain=DOMAIN,
        key_activation_delay_s=0,
    )


@dataclass
class Served:
    url: str
    plane: ControlPlane
    http: httpx.AsyncClient

    def admin(self) -> dict[str, str]:
        token = self.plane.tokens.mint_user_token("admin", admin=True)
        return {"Authorization": f"Bearer {token}"}

    async def create_node(self, node_id: str) -> str:
        """Makes the node; returns its bootstrap token, as the VM would find it."""
        answer = await self.http.post("/api/nodes", json={"node_id": node_id}, headers=self.admin())
        assert answer.status_code == 201, answer.text
        files = files_by_path(answer.json()["user_data"])
        return str(files["/etc/vm-agent/bootstrap-token"]["content"]).strip()

    async def node(self, node_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"/api/nodes/{node_id}", headers=self.admin())
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def provisioning(self, node_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"/api/nodes/{node_id}/provisioning", headers=self.admin())
        return dict(answer.json())


@asynccontextmanager
async def serve(
    sock: socket.socket, settings: ControlPlaneSettings, verify: ssl.SSLContext | bool = True
) -> AsyncIterator[Served]:
    """Serves on `sock` (and closes it afterwards); the same state dir may be served again."""
    app = create_app(settings)
    plane = app.state.plane
    try:
        async with (
            serve_control_plane(settings, app=app, sock=sock) as url,
            httpx.AsyncClient(base_url=url, timeout=30, verify=verify) as http,
        ):
            yield Served(url, plane, http)
    finally:
        plane.close()
