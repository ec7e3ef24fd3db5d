"""Issue 15's checks on the real node's public port (forwarded to the host's loopback):
TLS only, a bad or expired token refused at the upgrade, /health says nothing more than
its status, and the daemon serves on after each refusal."""

from __future__ import annotations

import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from tests.vm.booted import VIEWER_PORT, BootedNode

pytestmark = pytest.mark.vm


def test_plain_ws_is_refused(node: BootedNode) -> None:
    url = f"ws://127.0.0.1:{node.vm.host_port(VIEWER_PORT)}/v1/ws"
    token = node.plane.viewer_token(node.node_id, "kim")

    async def run() -> str:
        try:
            async with connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                proxy=None,
                open_timeout=60,
            ):
                return "connected"
        except (InvalidMessage, OSError, EOFError) as exc:
            return type(exc).__name__

    assert node.plane.run(run) != "connected"
    assert_still_serving(node)


def refusal(node: BootedNode, token: str) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        try:
            async with node.viewer(token=token):
                return 101, ""
        except InvalidStatus as exc:
            return exc.response.status_code, bytes(exc.response.body or b"").decode()

    status, body = node.plane.run(run)
    return int(status), str(body)


def test_a_bad_or_expired_token_is_refused_at_the_upgrade(node: BootedNode) -> None:
    tokens = node.plane.plane.tokens
    good = tokens.mint_viewer_token(node.node_id, ["read"], subject="kim")
    an_hour_ago = tokens.with_clock(lambda: time.time() - 3600)
    cases = {
        "a bad signature": good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB"),
        "expired": an_hour_ago.mint_viewer_token(node.node_id, ["read"], subject="kim", ttl_s=60),
        "another node's": tokens.mint_viewer_token("another-node", ["read"], subject="kim"),
        "not a token": "not-a-jwt",
    }
    since = node.guest_now()
    for name, token in cases.items():
        assert refusal(node, token) == (401, '{"error":"unauthorized"}'), name
    journal = node.journal(since=since)
    assert "token expired" in journal and "bad signature" in journal, journal
    assert_still_serving(node)


def get(node: BootedNode, path: str, **headers: str) -> httpx.Response:
    url = f"https://127.0.0.1:{node.vm.host_port(VIEWER_PORT)}{path}"
    with httpx.Client(verify=node.viewer_tls(), trust_env=False, timeout=60) as client:
        # verify the node's certificate under its own name, as viewers do
        return client.get(url, headers=headers, extensions={"sni_hostname": node.dns_name})


def test_health_is_minimal_and_metrics_need_the_node_scope(node: BootedNode) -> None:
    health = get(node, "/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert node.node_id not in health.text
    assert get(node, "/metrics").status_code == 401
    viewer = node.plane.viewer_token(node.node_id, "kim", ("read", "write"))
    assert get(node, "/metrics", Authorization=f"Bearer {viewer}").status_code == 403
    scoped = node.plane.viewer_token(node.node_id, "control-plane", ("node",))
    metrics = get(node, "/metrics", Authorization=f"Bearer {scoped}")
    assert metrics.status_code == 200 and "vm_agent_" in metrics.text


def assert_still_serving(node: BootedNode) -> None:
    async def run() -> object:
        async with node.viewer(subject="kim") as viewer:
            return await viewer.call("session/list", {})

    assert node.plane.run(run) == {"sessions": []}
