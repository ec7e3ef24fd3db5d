"""A control plane served on loopback with an httpx client, for API tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from control_plane.app import create_app, serve_control_plane
from control_plane.keys import Clock
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings


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


@asynccontextmanager
async def running(
    settings: ControlPlaneSettings, clock: Clock = time.time
) -> AsyncIterator[Running]:
    app = create_app(settings, clock=clock)
    plane = app.state.plane
    try:
        async with (
            serve_control_plane(settings, app=app) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            yield Running(url, plane, client)
    finally:
        plane.close()
