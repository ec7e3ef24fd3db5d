"""Viewer auth with real tokens from the real control plane, checked by the real verifier."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.server.harness import NODE, Client, Daemon, RpcError, daemon, metric_value

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FAILURES = "vm_agent_ws_auth_failures_total"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(d: Daemon, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": d.issuer,
        "aud": "vm-agent",
        "node": NODE,
        "scope": "read write",
        "sub": "someone",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(over)
    return claims


def _signed(d: Daemon, claims: dict[str, Any]) -> str:
    key = d.tokens.keys.signing_key()
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})


def _hs256_with_public_key(d: Daemon) -> str:
    key = d.tokens.keys.signing_key()
    public = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = _b64(json.dumps(_claims(d)).encode())
    sig = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _alg_none(d: Daemon) -> str:
    key = d.tokens.keys.signing_key()
    head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": key.kid}).encode())
    return f"{head}.{_b64(json.dumps(_claims(d)).encode())}."


def _unknown_kid(d: Daemon) -> str:
    stranger = Ed25519PrivateKey.generate()
    return jwt.encode(_claims(d), stranger, algorithm="EdDSA", headers={"kid": "not-a-known-kid"})


async def _refused(client: Client) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        await client.call("session/list")
    rcvd = closed.value.rcvd
    assert rcvd is not None
    return rcvd.code, rcvd.reason


async def test_a_valid_bearer_token_opens_the_api(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer(d.token("read")) as v:
        assert await v.call("session/list") == {"sessions": []}


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(
            lambda d: d.tokens.with_clock(lambda: time.time() - 3600).mint_viewer_token(
                NODE, ["read", "write"], 300
            ),
            id="expired",
        ),
        pytest.param(lambda d: d.token(node="node-2"), id="wrong-node"),
        pytest.param(lambda d: _signed(d, _claims(d, aud="control-plane")), id="wrong-audience"),
        pytest.param(
            lambda d: _signed(d, _claims(d, iss="https://evil.example")), id="wrong-issuer"
        ),
        pytest.param(lambda d: d.tokens.mint_callback_token(NODE), id="callback-token"),
        pytest.param(_alg_none, id="alg-none"),
        pytest.param(_hs256_with_public_key, id="hs256-public-key"),
        pytest.param(_unknown_kid, id="unknown-kid"),
        pytest.param(lambda d: "not.a.jwt", id="garbage"),
    ],
)
async def test_bad_tokens_are_refused_401_at_the_upgrade_and_4001_as_first_message(
    tmp_path: Path, forge: Any
) -> None:
    async with daemon(tmp_path) as d:
        token = forge(d)
        # On the upgrade: HTTP 401 before any websocket exists (no viewer was ever made).
        assert await _upgrade_status(d, {"Authorization": f"Bearer {token}"}) == 401
        assert d.server.viewer_count == 0
        assert metric_value(d.metrics, "vm_agent_viewers_connected") == 0
        # The same token as a first message is refused with 4001.
        async with d.viewer(bearer=False) as v:
            await v.send({"jsonrpc": "2.0", "id": 1, "method": "auth", "params": {"token": token}})
            assert await _refused(v) == (4001, "unauthorized")
        assert metric_value(d.metrics, FAILURES) == 2
        # Nothing was let through, and the daemon still serves good tokens.
        async with d.viewer() as v:
            assert await v.call("session/list") == {"sessions": []}


async def _upgrade_status(d: Daemon, headers: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(d.url, additional_headers=headers):
            pass
    response = refused.value.response
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"unauthorized" in response.body
    return response.status_code


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": "Basic abc"}, id="basic"),
        pytest.param({"Authorization": "Bearer"}, id="bearer-alone"),
        pytest.param({"Authorization": ""}, id="empty"),
        pytest.param([("Authorization", "Bearer a"), ("Authorization", "Bearer b")], id="two"),
    ],
)
async def test_a_malformed_authorization_header_is_refused_401(
    tmp_path: Path, headers: Any
) -> None:
    async with daemon(tmp_path) as d:
        if isinstance(headers, list):  # two headers: one of them a good token
            headers = [headers[0], ("Authorization", f"Bearer {d.token()}")]
        assert await _upgrade_status(d, headers) == 401
        assert d.server.viewer_count == 0


async def test_first_message_auth(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer(bearer=False) as v:
        answer = await v.request("auth", {"token": d.token("read")})
        assert answer["result"] == {"subject": "dev-viewer"}
        assert await v.call("session/list") == {"sessions": []}
        # A second auth is an error answer, not a crash.
        with pytest.raises(RpcError) as err:
            await v.call("auth", {"token": d.token()})
        assert err.value.code == -32600
        assert await v.call("session/list") == {"sessions": []}


async def test_a_first_message_that_is_not_auth_is_refused(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer(bearer=False) as v:
        assert await _refused(v) == (4001, "unauthorized")
    async with daemon(tmp_path / "2") as d, d.viewer(bearer=False) as v:
        await v.ws.send("{not json")
        with pytest.raises(ConnectionClosed) as closed:
            await v.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


async def test_no_auth_message_in_time_is_refused(tmp_path: Path) -> None:
    async with daemon(tmp_path, auth_timeout_s=0.3) as d, d.viewer(bearer=False) as v:
        with pytest.raises(ConnectionClosed) as closed:
            await v.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "unauthorized")
        assert metric_value(d.metrics, FAILURES) == 1


async def test_a_read_token_cannot_write(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        async with d.viewer() as writer:
            await d.start(writer, "echo", session_id="s1")
        async with d.viewer(d.token("read")) as reader:
            for method, params in [
                ("session/start", {"agent": "echo", "cwd": str(d.workdir)}),
                (
                    "session/prompt",
                    {
                        "session_id": "s1",
                        "prompt": [{"type": "text", "text": "x"}],
                        "prompt_id": "p",
                    },
                ),
                ("session/cancel", {"session_id": "s1"}),
                ("session/stop", {"session_id": "s1"}),
                ("session/recover", {"session_id": "s1"}),
                ("permission/respond", {"session_id": "s1", "request_id": "r", "cancelled": True}),
            ]:
                with pytest.raises(RpcError) as err:
                    await reader.call(method, params)
                assert err.value.code == -32003, method
                assert "forbidden" in err.value.message and "write" in err.value.message
            # Reading is allowed.
            listed = await reader.call("session/list")
            assert [s["session_id"] for s in listed["sessions"]] == ["s1"]
            sub = await reader.call("session/subscribe", {"session_id": "s1"})
            assert sub["head_seq"] >= 1
        assert d.supervisor.get("s1").state.value == "ready"
        events = await d.log.read("s1", 0, 1000)
        assert "prompt.started" not in [e.type for e in events]
