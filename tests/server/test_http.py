"""Plain HTTP on the viewer port: /health for anyone; /metrics and /status for the node
scope; a loopback-only metrics port when configured; nothing else."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server.harness import NODE, daemon, settled_head, text

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_health_says_up_and_nothing_else(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        token = d.token()
        async with d.viewer(token) as v:
            await d.start(v, "echo", session_id="s1")
            async with httpx.AsyncClient(base_url=d.http_url) as http:
                r = await http.get("/health")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        # What a load balancer needs; no node id, counts, versions or token lifetimes.
        assert r.json() == {"status": "ok"}
        assert NODE not in r.text and token not in r.text


async def test_status_is_for_the_node_scope(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        async with d.viewer() as v:
            await d.start(v, "echo", session_id="s1")
            await d.start(v, "echo", session_id="s2")
            await v.call("session/stop", {"session_id": "s2"})
            await settled_head(d, "s2")
            node = d.token("node", subject="control-plane")
            async with httpx.AsyncClient(base_url=d.http_url) as http:
                r = await http.get("/status", headers=bearer(node))
                anonymous = await http.get("/status")
                user = await http.get("/status", headers=bearer(d.token()))
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok"
        assert body["node_id"] == NODE
        assert body["version"]
        assert body["sessions"] == {"ready": 1, "stopped": 1}
        assert body["uptime_s"] >= 0
        assert body["viewers"] == 1
        assert body["control_plane"] == "connected"  # from the daemon's health callback
        assert node not in r.text and "Bearer" not in r.text
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert user.status_code == 403


async def test_metrics_need_the_node_scope(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        async with d.viewer() as v:
            await d.start(v, "echo", session_id="s1")
            await v.call("session/subscribe", {"session_id": "s1"})
            await v.call(
                "session/prompt", {"session_id": "s1", "prompt": text("hi"), "prompt_id": "p"}
            )
            async with d.viewer(bearer=False) as refused:
                await refused.send({"jsonrpc": "2.0", "id": 1, "method": "auth", "params": {}})
                with pytest.raises(ConnectionClosed):
                    await refused.recv()
            node = d.token("node", subject="control-plane")
            async with httpx.AsyncClient(base_url=d.http_url) as http:
                anonymous = await http.get("/metrics")
                forged = await http.get("/metrics", headers=bearer("not.a.token"))
                user = await http.get("/metrics", headers=bearer(d.token("read", "write")))
                r = await http.get("/metrics", headers=bearer(node))
        assert anonymous.status_code == 401
        assert forged.status_code == 401
        assert user.status_code == 403
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        lines = r.text.splitlines()

        def value(prefix: str) -> float:
            [line] = [x for x in lines if x.startswith(prefix + " ")]
            return float(line.rsplit(" ", 1)[1])

        assert value("vm_agent_viewers_connected") == 1
        # The first-message failure, then the anonymous and the forged scrape.
        assert value("vm_agent_ws_auth_failures_total") == 3
        assert value('vm_agent_jsonrpc_messages_total{direction="in",peer="viewer"}') >= 3
        assert value('vm_agent_jsonrpc_messages_total{direction="out",peer="viewer"}') >= 6
        assert value("vm_agent_viewer_overflows_total") == 0
        assert value('vm_agent_connections{state="authenticated"}') == 2  # the viewer, this scrape
        assert value('vm_agent_connections_refused_total{reason="total"}') == 0


async def test_a_loopback_metrics_port_serves_metrics_without_a_token(tmp_path: Path) -> None:
    async with daemon(tmp_path, metrics_port=0) as d:
        port = d.server.metrics_port
        assert port is not None and port != d.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.get("/metrics")
            assert r.status_code == 200
            assert "vm_agent_viewers_connected" in r.text
            for path in ("/health", "/status", "/v1/ws", "/"):
                assert (await http.get(path)).status_code == 404, path
        sockname = d.server._ws_servers[1].sockets[0].getsockname()
        assert sockname[0] == "127.0.0.1"


async def test_other_paths_are_404_and_the_websocket_path_needs_an_upgrade(
    tmp_path: Path,
) -> None:
    async with daemon(tmp_path) as d, httpx.AsyncClient(base_url=d.http_url) as http:
        for path in ("/", "/v1", "/healthz", "/v1/ws/x", "/metrics/x"):
            assert (await http.get(path)).status_code == 404, path
        r = await http.get("/v1/ws")
        assert r.status_code in (400, 426)
        assert (await http.get("/health?x=1")).status_code == 200


async def test_no_metrics_object_means_404(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        d.server.metrics = None
        node = d.token("node", subject="control-plane")
        async with httpx.AsyncClient(base_url=d.http_url) as http:
            assert (await http.get("/metrics", headers=bearer(node))).status_code == 404
