"""Task submission, GitHub links and the JWKS over real HTTP on loopback."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from sqlalchemy import select

from control_plane.db import tasks
from control_plane.settings import ControlPlaneSettings
from tests.clock import FakeClock
from tests.control_plane.harness import running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SUBMISSION: dict[str, Any] = {
    "taskId": "task-1",
    "provider": "hetzner",
    "requirements": {"minVcpu": 3, "exclusiveNode": False},
    "trigger": {"id": "trig-9", "requirements": {}},
    "agentProfile": {"id": "prof-2", "requirements": {"minMemoryGb": 6, "minVcpu": 1}},
    "project": {"id": "proj-1", "requirements": {"minDiskGb": 60}},
    "user": {"id": "alice", "requirements": {"maxCoTenants": 1}},
}


async def test_task_submission_stores_audit_columns(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        r = await cp.client.post("/api/tasks", json=SUBMISSION, headers=cp.user("alice"))
        assert r.status_code == 201, r.text
        made = r.json()
        expected_reservation = {
            "cpuMillis": 3000,
            "memoryMb": 6144,
            "diskMb": 61440,
            "exclusiveNode": False,
            "maxCoTenants": 1,
            "source": "task",
            "sourceId": "task-1",
            "version": 1,
        }
        assert made["reservation"] == expected_reservation
        assert made["requestedVmSize"] == "medium"  # 3 vCPU, 6 GB, 60 GB on hetzner
        assert made["vmSizeSource"] == "reservation"
        assert made["requirements"] == SUBMISSION["requirements"]
        assert made["placementExplanation"] == ""
        assert made["provenance"]["minMemoryGb"] == {"layer": "agent_profile", "layerId": "prof-2"}
        assert made["provenance"]["minVcpu"] == {"layer": "task", "layerId": "task-1"}

        # The columns themselves, straight from the database.
        with cp.plane.engine.connect() as conn:
            row = conn.execute(select(tasks)).mappings().one()
        assert row["requested_vm_size"] == "medium"
        assert row["vm_size_source"] == "reservation"
        assert json.loads(row["requirements_json"]) == SUBMISSION["requirements"]
        assert json.loads(row["reservation_json"]) == expected_reservation
        assert row["placement_explanation"] == ""

        again = await cp.client.get("/api/tasks/task-1", headers=cp.user("alice"))
        assert again.json() == made

        dup = await cp.client.post("/api/tasks", json=SUBMISSION, headers=cp.user("alice"))
        assert dup.status_code == 409


async def test_explicit_vm_size_and_refusals(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        h = cp.user("alice")
        r = await cp.client.post(
            "/api/tasks", json={"taskId": "t2", "vmSize": "large", "provider": "gcp"}, headers=h
        )
        assert (r.json()["requestedVmSize"], r.json()["vmSizeSource"]) == ("large", "task")
        assert r.json()["reservation"]["source"] == "platform"

        too_big = {"taskId": "t3", "provider": "gcp", "requirements": {"minDiskGb": 51}}
        r = await cp.client.post("/api/tasks", json=too_big, headers=h)
        assert r.status_code == 422
        assert "no gcp size fits" in r.json()["error"]

        bad = {"project": {"id": "p", "requirements": {"maxCoTenants": 0}}}
        r = await cp.client.post("/api/tasks", json=bad, headers=h)
        assert r.status_code == 422
        assert (r.json()["layer"], r.json()["field"]) == ("project", "maxCoTenants")

        r = await cp.client.post("/api/tasks", json={"requirements": {"gpus": 1}}, headers=h)
        assert (r.status_code, r.json()["field"]) == (422, "gpus")
        r = await cp.client.post("/api/tasks", json={"provider": "aws"}, headers=h)
        assert r.status_code == 422

        r = await cp.client.post("/api/tasks", json={"taskId": "t2"}, headers=h)
        assert r.status_code == 409


async def test_only_user_tokens_open_tasks_and_github(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        viewer = cp.bearer(cp.plane.tokens.mint_viewer_token("n1", ["read", "write"]))
        for method, path, body in [
            ("POST", "/api/tasks", {"taskId": "x"}),
            ("GET", "/api/tasks/x", None),
            ("POST", "/api/github/installations", {"installationId": 1}),
            ("GET", "/api/github/installations", None),
        ]:
            for headers in (cp.callback("n1"), viewer):
                r = await cp.client.request(method, path, json=body, headers=headers)
                assert r.status_code == 403, (path, r.text)
            r = await cp.client.request(method, path, json=body)
            assert r.status_code == 401


async def test_github_links_over_http(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        for user in ("alice", "bob"):
            r = await cp.client.post(
                "/api/github/installations",
                json={"installationId": 31337, "accountLogin": "acme"},
                headers=cp.user(user),
            )
            assert r.status_code == 201
            assert r.json() == {"installationId": "31337", "accountLogin": "acme"}
        for user in ("alice", "bob"):
            r = await cp.client.get("/api/github/installations", headers=cp.user(user))
            assert r.json() == {
                "installations": [{"installationId": "31337", "accountLogin": "acme"}]
            }
        r = await cp.client.post(
            "/api/github/installations", json={"installationId": 31337}, headers=cp.user("bob")
        )
        assert r.status_code == 409


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
