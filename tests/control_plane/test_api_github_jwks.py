"""GitHub links, the JWKS and which tokens open the user endpoints, over real HTTP."""

from __future__ import annotations

import time

import jwt
import pytest

from control_plane.settings import ControlPlaneSettings
from tests.clock import FakeClock
from tests.control_plane.harness import running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_only_user_tokens_open_tasks_and_github(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        viewer = cp.bearer(cp.plane.tokens.mint_viewer_token("n1", ["read", "write"]))
        calls: list[tuple[str, str, dict[str, object] | None]] = [
            ("POST", "/api/tasks", {"taskId": "x", "agent": "fake"}),
            ("GET", "/api/tasks/x", None),
            ("GET", "/api/workspaces/x", None),
            ("POST", "/api/workspaces/x/release", None),
            ("PUT", "/api/defaults/projects/p", {"requirements": {}}),
            ("GET", "/api/defaults/projects/p", None),
            ("POST", "/api/nodes/n1/sessions", {"agent": "fake"}),
            ("GET", "/api/nodes/n1/sessions/s", None),
            ("POST", "/api/keys/rotate", {}),
            ("POST", "/api/github/installations", {"installationId": 1}),
            ("GET", "/api/github/installations", None),
        ]
        for method, path, body in calls:
            for headers in (cp.callback("n1"), viewer):
                r = await cp.client.request(method, path, json=body, headers=headers)
                assert r.status_code == 403, (path, r.text)
            r = await cp.client.request(method, path, json=body)
            assert r.status_code == 401


async def test_github_links_need_proof(settings: ControlPlaneSettings) -> None:
    # Proven links (a GitHub user token, an admin's confirmation) are in tests/github/.
    async with running(settings) as cp:
        for user in ("alice", "bob"):
            r = await cp.client.post(
                "/api/github/installations",
                json={"installationId": 31337},
                headers=cp.user(user),
            )
            assert r.status_code == 403
            assert r.json()["error"].startswith("unproven link")
            r = await cp.client.get("/api/github/installations", headers=cp.user(user))
            assert r.json() == {"installations": []}


async def test_jwks_rotation_over_http(settings: ControlPlaneSettings) -> None:
    clock = FakeClock(time.time())
    async with running(settings, clock) as cp:
        keys = cp.plane.tokens.keys
        jwks = (await cp.client.get("/.well-known/jwks.json")).json()
        (only,) = jwks["keys"]
        assert {k: only[k] for k in ("kty", "crv", "alg", "use")} == {
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
        }
        old_token = cp.plane.tokens.mint_callback_token("n1")

        new = keys.rotate(activate_after_s=300)
        kids = [k["kid"] for k in (await cp.client.get("/.well-known/jwks.json")).json()["keys"]]
        assert kids == [only["kid"], new.kid]
        # Published, not yet signing.
        assert (
            jwt.get_unverified_header(cp.plane.tokens.mint_callback_token("n1"))["kid"]
            == (only["kid"])
        )

        clock.advance(300)
        new_token = cp.plane.tokens.mint_callback_token("n1")
        assert jwt.get_unverified_header(new_token)["kid"] == new.kid
        for token in (old_token, new_token):
            r = await cp.client.post(
                "/api/nodes/n1/ready", json={"version": "1"}, headers=cp.bearer(token)
            )
            assert r.status_code == 200

        # Verify a token the way the daemon will: with the served JWKS only.
        served = jwt.PyJWKSet.from_dict((await cp.client.get("/.well-known/jwks.json")).json())
        viewer = cp.plane.tokens.mint_viewer_token("n1", ["read"])
        key = next(k for k in served.keys if k.key_id == new.kid)
        claims = jwt.decode(
            viewer,
            key,
            algorithms=["EdDSA"],
            audience="vm-agent",
            issuer=settings.public_url,
            options={"verify_iat": False},  # the fake clock runs ahead of the real one
        )
        assert claims["scope"] == "read"

        clock.advance(settings.max_token_ttl_s + 60)
        kids = [k["kid"] for k in (await cp.client.get("/.well-known/jwks.json")).json()["keys"]]
        assert kids == [new.kid]


async def test_key_rotation_through_the_api_is_for_admins(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        r = await cp.client.post("/api/keys/rotate", json={}, headers=cp.user("alice"))
        assert (r.status_code, r.json()["error"]) == (403, "forbidden: admin scope required")
        r = await cp.client.post("/api/keys/rotate", json={"activateAfterS": 0}, headers=cp.admin())
        assert r.status_code == 201
        kid = r.json()["kid"]
        kids = [k["kid"] for k in (await cp.client.get("/.well-known/jwks.json")).json()["keys"]]
        assert kids[-1] == kid and len(kids) == 2
        token = cp.plane.tokens.mint_callback_token("n1")
        assert jwt.get_unverified_header(token)["kid"] == kid
        r = await cp.client.post(
            "/api/keys/rotate", json={"activateAfterS": -1}, headers=cp.admin()
        )
        assert r.status_code == 422
