"""Plain HTTP on the viewer port: /health and /metrics, nothing else."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server.harness import NODE, daemon, settled_head, text

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_health_says_what_an_operator_needs_and_no_secrets(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        token = d.token()
        async with d.viewer(token) as v:
            await d.start(v, "echo", session_id="s1")
            await d.start(v, "echo", session_id="s2")
            await v.call("session/stop", {"session_id": "s2"})
            await settled_head(d, "s2")
            async with httpx.AsyncClient(base_url=d.http_url) as http:
                r = await http.get("/health")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["status"] == "ok"
        assert body["node_id"] == NODE
        assert body["version"]
        assert body["sessions"] == {"ready": 1, "stopped": 1}
        assert body["uptime_s"] >= 0
        assert body["viewers"] == 1
        assert body["control_plane"] == "connected"  # from the daemon's health callback
        assert token not in r.text and "Bearer" not in r.text


async def test_metrics_in_prometheus_text(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        async with d.viewer() as v:
            await d.start(v, "echo", session_id="s1")
            await v.call("session/subscribe", {"session_id": "s1"})
            await v.call(
                "session/prompt", {"session_id": "s1", "prompt": text("hi"), "prompt_id": "p"}
            )
            async with d.viewer("bad-token") as refused:
                with pytest.raises(ConnectionClosed):
                    await refused.recv()
            async with httpx.AsyncClient(base_url=d.http_url) as http:
                r = await http.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        lines = r.text.splitlines()

        def value(prefix: str) -> float:
            [line] = [x for x in lines if x.startswith(prefix + " ")]
            return float(line.rsplit(" ", 1)[1])

        assert value("vm_agent_viewers_connected") == 1
        assert value("vm_agent_ws_auth_failures_total") == 1
        assert value('vm_agent_jsonrpc_messages_total{direction="in",peer="viewer"}') >= 3
        assert value('vm_agent_jsonrpc_messages_total{direction="out",peer="viewer"}') >= 6
        assert value("vm_agent_viewer_overflows_total") == 0


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
        async with httpx.AsyncClient(base_url=d.http_url) as http:
            assert (await http.get("/metrics")).status_code == 404
