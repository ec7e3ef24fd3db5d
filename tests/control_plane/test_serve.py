"""Serving: ephemeral port, a stop and a restart on the same port keep the data."""

from __future__ import annotations

import httpx
import pytest

from control_plane.app import create_app, serve_control_plane
from control_plane.settings import ControlPlaneSettings

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_restart_on_same_port_keeps_events(settings: ControlPlaneSettings) -> None:
    app = create_app(settings)
    plane = app.state.plane
    headers = {"Authorization": f"Bearer {plane.tokens.mint_callback_token('n1')}"}
    batch = {"events": [{"session_id": "s", "seq": 1, "ts": 0.0, "type": "t", "data": None}]}
    async with serve_control_plane(settings, app=app) as url:
        port = int(url.rsplit(":", 1)[1])
        assert port > 0
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.post("/api/nodes/n1/events", json=batch, headers=headers)
            assert r.json() == {"stored": 1, "duplicates": 0}

    async with httpx.AsyncClient(base_url=url) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")

    # A fresh app over the same state directory, on the same port: same keys, same data.
    async with serve_control_plane(settings, port=port) as url2:
        assert url2 == url
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.post("/api/nodes/n1/events", json=batch, headers=headers)
            assert r.json() == {"stored": 0, "duplicates": 1}
    plane.close()


async def test_stops_cleanly_with_an_open_keepalive_connection(
    settings: ControlPlaneSettings,
) -> None:
    async with httpx.AsyncClient() as client:
        async with serve_control_plane(settings) as url:
            assert (await client.get(f"{url}/health")).json() == {"ok": True}
        with pytest.raises(httpx.TransportError):
            await client.get(f"{url}/health")


async def test_the_callers_error_comes_out_unwrapped(settings: ControlPlaneSettings) -> None:
    with pytest.raises(KeyError, match="boom"):
        async with serve_control_plane(settings) as url:
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{url}/health")).status_code == 200
            raise KeyError("boom")


async def test_serve_on_a_socket_bound_before_the_settings(tmp_path) -> None:
    from control_plane.app import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings = ControlPlaneSettings(state_dir=tmp_path / "s", public_url=f"http://127.0.0.1:{port}")
    async with serve_control_plane(settings, sock=sock) as url:
        assert url == settings.public_url
        async with httpx.AsyncClient() as client:
            jwks = (await client.get(f"{url}/.well-known/jwks.json")).json()
            assert len(jwks["keys"]) == 1
