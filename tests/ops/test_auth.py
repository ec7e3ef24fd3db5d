"""JwksVerifier against the real control plane (JWKS over HTTP on loopback)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from control_plane.app import bind_socket, create_app, serve_control_plane
from control_plane.identity.tokens import TokenIssuer
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings
from tests.clock import FakeClock
from vm_agent.edge.auth import MAX_CACHE_AGE_S, JwksVerifier, Unauthorized, ViewerIdentity

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

NODE = "node-1"


@dataclass
class Plane:
    url: str
    jwks_url: str
    issuer: str
    plane: ControlPlane
    clock: FakeClock
    requests: list[str]

    @property
    def tokens(self) -> TokenIssuer:
        return self.plane.tokens

    def verifier(self, **overrides: Any) -> JwksVerifier:
        # A real client whose event hook counts the JWKS requests actually sent.
        async def count(request: httpx.Request) -> None:
            self.requests.append(str(request.url))

        args: dict[str, Any] = {
            "jwks_url": self.jwks_url,
            "issuer": self.issuer,
            "node_id": NODE,
            "clock": self.clock,
            "http": httpx.AsyncClient(event_hooks={"request": [count]}),
        }
        args.update(overrides)
        return JwksVerifier(**args)

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        """Claims signed with the control plane's real current key."""
        key = self.tokens.keys.signing_key()
        return jwt.encode(
            claims, key.private_key, algorithm="EdDSA", headers={"kid": kid or key.kid}
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "aud": "vm-agent",
            "node": NODE,
            "scope": "read write",
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
        }
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[Plane]:
    sock = bind_socket()
    port = sock.getsockname()[1]
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "cp",
        public_url=f"http://127.0.0.1:{port}",
        viewer_token_ttl_s=300,
        callback_token_ttl_s=600,
        user_token_ttl_s=300,
        key_activation_delay_s=60,
    )
    clock = FakeClock(time.time())
    app = create_app(settings, clock=clock)
    plane = app.state.plane
    try:
        async with serve_control_plane(settings, app=app, sock=sock) as url:
            yield Plane(url, url + "/.well-known/jwks.json", settings.public_url, plane, clock, [])
    finally:
        plane.close()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


async def _refused(verifier: JwksVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        await verifier.verify(token)
    return str(info.value)


async def test_valid_tokens_read_and_write(cp: Plane) -> None:
    verifier = cp.verifier()
    try:
        rw = await verifier.verify(cp.tokens.mint_viewer_token(NODE, ["read", "write"]))
        assert isinstance(rw, ViewerIdentity)
        assert rw.subject == "dev-viewer"
        assert rw.scopes == {"read", "write"}
        assert rw.can_read and rw.can_write
        assert rw.token_id and rw.expires_at > cp.clock()
        ro = await verifier.verify(cp.tokens.mint_viewer_token(NODE, ["read"], subject="bob"))
        assert (ro.subject, ro.can_read, ro.can_write) == ("bob", True, False)
        wo = await verifier.verify(cp.tokens.mint_viewer_token(NODE, ["write"]))
        assert wo.can_read and wo.can_write  # write implies read
        assert len(cp.requests) == 1  # the JWKS is cached
    finally:
        await verifier.aclose()


async def test_claim_checks(cp: Plane) -> None:
    verifier = cp.verifier()
    try:
        expired = cp.tokens.with_clock(lambda: cp.clock() - 1000).mint_viewer_token(
            NODE, ["read"], ttl_s=300
        )
        assert "expired" in await _refused(verifier, expired)
        # Within the leeway (30 s) an expired token still passes.
        just = cp.tokens.with_clock(lambda: cp.clock() - 310).mint_viewer_token(
            NODE, ["read"], ttl_s=300
        )
        assert (await verifier.verify(just)).can_read
        future = cp.tokens.with_clock(lambda: cp.clock() + 1000).mint_viewer_token(NODE, ["read"])
        assert "future" in await _refused(verifier, future)
        wrong_node = cp.tokens.mint_viewer_token("node-2", ["read", "write"])
        assert "node" in await _refused(verifier, wrong_node)
        callback = cp.tokens.mint_callback_token(NODE)  # aud control-plane
        assert "audience" in await _refused(verifier, callback)
        assert "audience" in await _refused(verifier, cp.sign(cp.claims(aud="other")))
        assert "issuer" in await _refused(verifier, cp.sign(cp.claims(iss="http://evil")))
        assert "scope" in await _refused(verifier, cp.sign(cp.claims(scope=None)))
        assert "scope" in await _refused(verifier, cp.sign(cp.claims(scope="admin")))
        assert "'exp'" in await _refused(verifier, cp.sign(cp.claims(exp=None)))
        assert "'aud'" in await _refused(verifier, cp.sign(cp.claims(aud=None)))
        assert "subject" in await _refused(verifier, cp.sign(cp.claims(sub=None)))
        assert await _refused(verifier, "not.a.jwt")
        assert await _refused(verifier, "")
    finally:
        await verifier.aclose()


async def test_alg_none_and_hs256_with_public_key_refused_before_any_key(cp: Plane) -> None:
    key = cp.tokens.keys.signing_key()
    verifier = cp.verifier()
    try:
        none = _segments({"alg": "none", "typ": "JWT", "kid": key.kid}, cp.claims()) + "."
        assert "'none'" in await _refused(verifier, none)
        for public in (
            key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
            key.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ):
            signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": key.kid}, cp.claims())
            mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
            assert "'HS256'" in await _refused(verifier, signing_input + "." + _b64(mac))
        # Refused on the header alone: the JWKS was never even fetched.
        assert cp.requests == []
        # An EdDSA token with no kid is refused too.
        no_kid = jwt.encode(cp.claims(), key.private_key, algorithm="EdDSA")
        assert "kid" in await _refused(verifier, no_kid)
        assert cp.requests == []
    finally:
        await verifier.aclose()


def test_only_asymmetric_algorithms_can_be_pinned() -> None:
    for algs in (("HS256",), ("EdDSA", "none"), ()):
        with pytest.raises(ValueError):
            JwksVerifier(jwks_url="http://127.0.0.1:1/", issuer="i", node_id="n", algorithms=algs)


def _foreign_token(cp: Plane, kid: str) -> str:
    return jwt.encode(
        cp.claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
    )


async def test_unknown_kid_refused(cp: Plane) -> None:
    verifier = cp.verifier()
    try:
        reason = await _refused(verifier, _foreign_token(cp, "made-up-kid"))
        assert "unknown kid 'made-up-kid'" in reason
        # A known kid with a foreign key's signature fails the signature check.
        forged = _foreign_token(cp, cp.tokens.keys.signing_key().kid)
        assert "signature" in await _refused(verifier, forged)
    finally:
        await verifier.aclose()


async def test_refetch_floor_bounds_fetches(cp: Plane) -> None:
    verifier = cp.verifier(min_refetch_interval_s=30.0)
    try:
        reasons: list[str] = []

        async def attempt(i: int) -> None:
            reasons.append(await _refused(verifier, _foreign_token(cp, f"bad-{i}")))

        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(attempt, i)
        assert len(reasons) == 30
        assert len(cp.requests) == 1  # concurrent verifies shared one fetch
        for i in range(30, 60):
            await attempt(i)
        assert len(cp.requests) == 1  # within the floor: no more fetches
        assert "not refetched" in reasons[-1]
        # A genuine token still verifies from the cache meanwhile.
        assert (await verifier.verify(cp.tokens.mint_viewer_token(NODE, ["read"]))).can_read
        cp.clock.advance(31)
        await attempt(99)
        assert len(cp.requests) == 2  # one more once the floor has passed
    finally:
        await verifier.aclose()


async def test_key_rotation_picked_up_by_refetch(cp: Plane) -> None:
    verifier = cp.verifier(min_refetch_interval_s=30.0)
    try:
        old_token = cp.tokens.mint_viewer_token(NODE, ["read"])
        old_kid = cp.tokens.keys.signing_key().kid
        await verifier.verify(old_token)
        new = cp.tokens.keys.rotate()  # published now, signs after the 60 s delay
        assert cp.tokens.keys.signing_key().kid == old_kid
        cp.clock.advance(61)
        assert cp.tokens.keys.signing_key().kid == new.kid
        new_token = cp.tokens.mint_viewer_token(NODE, ["read", "write"])
        assert jwt.get_unverified_header(new_token)["kid"] == new.kid
        assert (await verifier.verify(new_token)).can_write
        assert len(cp.requests) == 2
        assert (await verifier.verify(old_token)).can_read  # old key still published
        assert len(cp.requests) == 2
    finally:
        await verifier.aclose()


async def test_stale_cache_refetched_but_kept_when_the_plane_is_down(cp: Plane) -> None:
    verifier = cp.verifier(min_refetch_interval_s=30.0)
    try:
        await verifier.verify(cp.tokens.mint_viewer_token(NODE, ["read"]))
        cp.clock.advance(MAX_CACHE_AGE_S + 1)
        await verifier.verify(cp.tokens.mint_viewer_token(NODE, ["read"]))
        assert len(cp.requests) == 2  # the old cache was refreshed
        await verifier.verify(cp.tokens.mint_viewer_token(NODE, ["read"]))
        assert len(cp.requests) == 2
        # A stale cache whose refresh fails still serves the keys it has.
        cp.clock.advance(MAX_CACHE_AGE_S + 1)
        verifier.jwks_url = cp.url + "/missing"
        assert (await verifier.verify(cp.tokens.mint_viewer_token(NODE, ["read"]))).can_read
        assert len(cp.requests) == 3
    finally:
        await verifier.aclose()


async def test_jwks_unreachable(cp: Plane, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    verifier = cp.verifier(jwks_url=f"http://127.0.0.1:{port}/.well-known/jwks.json")
    try:
        with caplog.at_level(logging.WARNING, logger="vm_agent.edge.auth"):
            reason = await _refused(verifier, cp.tokens.mint_viewer_token(NODE, ["read"]))
        assert "JWKS fetch failed" in reason and "ConnectError" in reason
        assert any("JWKS fetch from" in r.getMessage() for r in caplog.records)
    finally:
        await verifier.aclose()


async def test_jwks_http_error_and_own_client(cp: Plane) -> None:
    verifier = JwksVerifier(jwks_url=cp.url + "/nope", issuer=cp.issuer, node_id=NODE)
    try:
        reason = await _refused(verifier, cp.tokens.mint_viewer_token(NODE, ["read"]))
        assert "HTTP 404" in reason
    finally:
        await verifier.aclose()
