"""Node creation and the bootstrap exchange against the real control plane on loopback."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from control_plane.settings import ControlPlaneSettings
from control_plane.storage.provisioning_store import node_provisioning
from tests.clock import FakeClock
from tests.cloud_init.helpers import files_by_path, step_scripts
from tests.control_plane.harness import Running, running
from tests.provisioning.fixtures import BuiltArtifacts
from tests.provisioning.pki import csr_pem, handshake

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DOMAIN = "nodes.test.internal"
TOKEN_FILE = "/etc/vm-agent/bootstrap-token"


def settings_for(tmp: Path, artifacts: BuiltArtifacts | None, **extra: Any) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        state_dir=tmp / "cp",
        public_url="http://127.0.0.1:1",
        artifacts_dir=artifacts.directory if artifacts else tmp / "none",
        node_domain=DOMAIN,
        key_activation_delay_s=0,
        **extra,
    )


async def create(cp: Running, **body: Any) -> dict[str, Any]:
    answer = await cp.client.post("/api/nodes", json=body, headers=cp.admin())
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    return dict(answer.json())


def bootstrap_token(node: dict[str, Any]) -> str:
    return str(files_by_path(node["user_data"])[TOKEN_FILE]["content"]).strip()


async def exchange(cp: Running, node_id: str, token: str, csr: str | None = None) -> Any:
    return await cp.client.post(
        f"/api/nodes/{node_id}/bootstrap",
        json={"csr": csr or csr_pem()},
        headers=cp.bearer(token),
    )


async def test_a_node_is_created_with_its_user_data(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    async with running(settings_for(tmp_path, artifacts)) as cp:
        node = await create(cp, node_id="node-a", swap={"size_mb": 512, "swappiness": 5})
        assert (node["node_id"], node["hostname"]) == ("node-a", "node-a")
        assert node["dns_name"] == f"node-a.{DOMAIN}"
        assert node["agents"] == ["claude", "codex"]
        doc = yaml.safe_load(node["user_data"])
        assert doc["hostname"] == "node-a"
        steps = step_scripts(node["user_data"])
        manifest = artifacts.manifest
        assert manifest.agents is not None
        base = cp.plane.settings.public_url
        assert f"\nurl={base}/artifacts/{manifest.wheelhouse.file}\n" in steps["vm-agent"]
        assert f"\nsha256={manifest.wheelhouse.sha256}\n" in steps["vm-agent"]
        assert f"\nsha256={manifest.agents.sha256}\n" in steps["agents"]
        assert "\nsize_mb=512\n" in steps["swap"]
        token = bootstrap_token(node)
        assert len(token) >= 43
        # Stored hashed: the database never holds the token itself.
        with cp.plane.engine.connect() as conn:
            row = conn.execute(select(node_provisioning)).mappings().one()
        assert row["bootstrap_token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
        assert token not in str(dict(row))
        shown = await cp.client.get("/api/nodes/node-a/provisioning", headers=cp.admin())
        assert shown.status_code == 200 and "bootstrap_token_sha256" not in shown.json()
        # The node record exists where its reports will land.
        listed = await cp.client.get("/api/nodes/node-a", headers=cp.admin())
        assert listed.status_code == 200

        again = await cp.client.post("/api/nodes", json={"node_id": "node-a"}, headers=cp.admin())
        assert again.status_code == 409
        generated = await create(cp, agents=["codex"])
        assert generated["node_id"].startswith("node-") and generated["agents"] == ["codex"]
        assert (
            "claude-agent-acp"
            not in files_by_path(generated["user_data"])["/etc/vm-agent/agents.toml"]["content"]
        )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"agents": ["gemini"]}, 422),
        ({"agents": ["nope"]}, 422),
        ({"node_id": "Bad_Name"}, 422),
        ({"swap": {"size_mb": -1}}, 422),
        ({"port": 0}, 422),
        ({"agent_start_timeout_s": 0}, 422),
        ({"agent_start_timeout_s": 86400}, 422),
        ({"agent_start_timeout_s": "soon"}, 422),
        ({"callback_token": "x"}, 422),
    ],
)
async def test_bad_node_requests(
    tmp_path: Path, artifacts: BuiltArtifacts, body: dict[str, Any], status: int
) -> None:
    async with running(settings_for(tmp_path, artifacts)) as cp:
        answer = await cp.client.post("/api/nodes", json=body, headers=cp.admin())
        assert answer.status_code == status, answer.text


async def test_only_admins_create_nodes_and_only_with_artifacts(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    async with running(settings_for(tmp_path, None)) as cp:
        assert (await cp.client.post("/api/nodes", json={})).status_code == 401
        user = await cp.client.post("/api/nodes", json={}, headers=cp.user("u1"))
        assert user.status_code == 403
        callback = await cp.client.post("/api/nodes", json={}, headers=cp.callback("node-a"))
        assert callback.status_code == 403
        none = await cp.client.post("/api/nodes", json={}, headers=cp.admin())
        assert none.status_code == 503 and "artifacts build" in none.json()["error"]


async def test_the_exchange_gives_a_working_callback_token_and_certificate_once(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    async with running(settings_for(tmp_path, artifacts)) as cp:
        node = await create(cp, node_id="node-a")
        token = bootstrap_token(node)
        key = ec.generate_private_key(ec.SECP256R1())
        answer = await exchange(cp, "node-a", token, csr_pem(key))
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert set(body) == {"callback_token", "certificate", "ca_certificate", "dns_name"}
        ready = await cp.client.post(
            "/api/nodes/node-a/ready",
            json={"version": "0.1.0"},
            headers=cp.bearer(body["callback_token"]),
        )
        assert ready.status_code == 200
        ca = await cp.client.get("/api/node-ca.pem")
        assert ca.status_code == 200 and ca.text == body["ca_certificate"]
        assert handshake(body["certificate"], key, ca.text, f"node-a.{DOMAIN}", tmp_path) == "ok"
        row = (await cp.client.get("/api/nodes/node-a/provisioning", headers=cp.admin())).json()
        assert row["bootstrapped_at"] is not None and len(row["cert_sha256"]) == 64

        second = await exchange(cp, "node-a", token)
        assert second.status_code == 401
        assert second.json()["error"] == "bootstrap token already used"
        assert body["callback_token"] not in node["user_data"]


async def test_wrong_tokens_and_other_nodes_tokens_are_refused(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    async with running(settings_for(tmp_path, artifacts)) as cp:
        token_a = bootstrap_token(await create(cp, node_id="node-a"))
        token_b = bootstrap_token(await create(cp, node_id="node-b"))
        for node_id, token in [
            ("node-a", token_b),  # another node's token
            ("node-a", token_a[:-1] + ("A" if token_a[-1] != "A" else "B")),
            ("node-c", token_a),  # no such node
            ("node-a", cp.plane.tokens.mint_callback_token("node-a")),  # not a bootstrap token
        ]:
            answer = await exchange(cp, node_id, token)
            assert answer.status_code == 401
            assert answer.json()["error"] == "bootstrap token refused"
            assert answer.headers["www-authenticate"] == "Bearer"
        bare = await cp.client.post("/api/nodes/node-a/bootstrap", json={"csr": csr_pem()})
        assert bare.status_code == 401
        # None of that spent anything.
        assert (await exchange(cp, "node-a", token_a)).status_code == 200
        assert (await exchange(cp, "node-b", token_b)).status_code == 200


async def test_an_expired_token_is_refused(tmp_path: Path, artifacts: BuiltArtifacts) -> None:
    clock = FakeClock(1_800_000_000.0)
    settings = settings_for(tmp_path, artifacts, bootstrap_token_ttl_s=600)
    async with running(settings, clock=clock) as cp:
        token = bootstrap_token(await create(cp, node_id="node-a"))
        clock.advance(600)
        answer = await exchange(cp, "node-a", token)
        assert answer.status_code == 401
        assert answer.json()["error"] == "bootstrap token expired"


async def test_a_bad_request_leaves_the_token_unspent(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    async with running(settings_for(tmp_path, artifacts)) as cp:
        token = bootstrap_token(await create(cp, node_id="node-a"))
        for bad in ["not a csr", csr_pem(ec.generate_private_key(ec.SECP192R1()))]:
            answer = await exchange(cp, "node-a", token, bad)
            assert answer.status_code == 422 and answer.json()["error"].startswith("invalid csr")
        notjson = await cp.client.post(
            "/api/nodes/node-a/bootstrap", content=b"{", headers=cp.bearer(token)
        )
        assert notjson.status_code == 400
        assert (await exchange(cp, "node-a", token)).status_code == 200


async def test_two_exchanges_at_once_one_wins(tmp_path: Path, artifacts: BuiltArtifacts) -> None:
    async with running(settings_for(tmp_path, artifacts)) as cp:
        token = bootstrap_token(await create(cp, node_id="node-a"))
        statuses: list[int] = []

        async def one() -> None:
            statuses.append((await exchange(cp, "node-a", token)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
        assert sorted(statuses) == [200, 401, 401, 401, 401]


async def test_artifacts_are_served_by_name_with_the_manifests_hashes(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    async with running(settings_for(tmp_path, artifacts)) as cp:
        manifest = (await cp.client.get("/artifacts/manifest.json")).json()
        assert manifest["wheelhouse"]["sha256"] == artifacts.manifest.wheelhouse.sha256
        for entry in (manifest["wheelhouse"], manifest["agents"]):
            got = await cp.client.get(f"/artifacts/{entry['file']}")
            assert got.status_code == 200
            assert hashlib.sha256(got.content).hexdigest() == entry["sha256"]
        for name in ["nope.tar", "..%2Fcp%2Fnode-ca%2Fca.key", ".wheelhouse.tar.tmp"]:
            assert (await cp.client.get(f"/artifacts/{name}")).status_code == 404
        assert (await cp.client.get("/artifacts/../cp/node-ca/ca.key")).status_code == 404
