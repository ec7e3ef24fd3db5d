"""Certificate renewal (`POST /api/nodes/{id}/certificate`) against the real control plane:
a bootstrapped node's callback token, and nothing else, gets it a new certificate, and only
for the node's own key; the control plane's check on a node's connection accepts only the
certificate on record (issue 28, item 3)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from control_plane.identity.node_certs import NodeCertificateRefused, verify_node_certificate
from tests.control_plane.harness import Running, running
from tests.provisioning.fixtures import BuiltArtifacts
from tests.provisioning.pki import csr_pem, handshake, served_certificate
from tests.provisioning.test_nodes_api import (
    DOMAIN,
    bootstrap_token,
    create,
    exchange,
    settings_for,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def renew(cp: Running, node_id: str, token: str, csr: str) -> httpx.Response:
    return await cp.client.post(
        f"/api/nodes/{node_id}/certificate", json={"csr": csr}, headers=cp.bearer(token)
    )


async def bootstrapped(cp: Running, node_id: str, key: ec.EllipticCurvePrivateKey) -> str:
    """Creates the node and trades its bootstrap token: its callback token."""
    return str((await bootstrap_answer(cp, node_id, key))["callback_token"])


async def bootstrap_answer(
    cp: Running, node_id: str, key: ec.EllipticCurvePrivateKey
) -> dict[str, str]:
    answer = await exchange(
        cp, node_id, bootstrap_token(await create(cp, node_id=node_id)), csr_pem(key)
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_bootstrapped_node_renews_with_its_callback_token(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    async with running(settings_for(tmp_path, artifacts)) as cp:
        key = ec.generate_private_key(ec.SECP256R1())
        token = await bootstrapped(cp, "node-a", key)
        before = (await cp.client.get("/api/nodes/node-a/provisioning", headers=cp.admin())).json()
        answer = await renew(cp, "node-a", token, csr_pem(key))
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert set(body) == {"certificate", "ca_certificate", "dns_name"}
        assert body["dns_name"] == f"node-a.{DOMAIN}"
        pem = body["certificate"]
        assert handshake(pem, key, body["ca_certificate"], f"node-a.{DOMAIN}", tmp_path) == "ok"
        cert = x509.load_pem_x509_certificate(pem.encode())
        after = (await cp.client.get("/api/nodes/node-a/provisioning", headers=cp.admin())).json()
        der = cert.public_bytes(serialization.Encoding.DER)
        assert after["cert_sha256"] == hashlib.sha256(der).hexdigest() != before["cert_sha256"]
        assert after["cert_serial"] == format(cert.serial_number, "x")


async def test_only_that_nodes_callback_token_renews_and_only_once_bootstrapped(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    async with running(settings_for(tmp_path, artifacts)) as cp:
        key = ec.generate_private_key(ec.SECP256R1())
        token_a = await bootstrapped(cp, "node-a", key)
        node_b = await create(cp, node_id="node-b")  # created, never bootstrapped
        csr = csr_pem(key)
        cases = [
            ("node-b", token_a, 403, "forbidden: token is for another node"),
            ("node-b", cp.plane.tokens.mint_callback_token("node-b"), 404, "no bootstrapped node"),
            ("node-a", bootstrap_token(node_b), 401, "unauthorized"),
            ("node-a", cp.plane.tokens.mint_user_token("ops", admin=True), 403, "not a callback"),
            ("node-a", token_a, 422, "invalid csr"),
        ]
        for node_id, token, status, says in cases:
            answer = await renew(cp, node_id, token, "not a csr" if status == 422 else csr)
            assert answer.status_code == status, (node_id, answer.text)
            assert says in answer.json()["error"], answer.text
        bare = await cp.client.post("/api/nodes/node-a/certificate", json={"csr": csr})
        assert bare.status_code == 401


async def test_a_stolen_callback_token_gets_no_certificate_for_another_key(
    tmp_path: Path, artifacts: BuiltArtifacts, database_url: str
) -> None:
    async with running(settings_for(tmp_path, artifacts, database_url=database_url)) as cp:
        key = ec.generate_private_key(ec.SECP256R1())
        token = await bootstrapped(cp, "node-a", key)
        before = (await cp.client.get("/api/nodes/node-a/provisioning", headers=cp.admin())).json()
        for thief in (ec.generate_private_key(ec.SECP256R1()), rsa_key()):
            answer = await renew(cp, "node-a", token, csr_pem(thief))
            assert answer.status_code == 403, answer.text
            assert "another key than the node's certificate on record" in answer.json()["error"]
            assert "certificate" not in answer.json()
        after = (await cp.client.get("/api/nodes/node-a/provisioning", headers=cp.admin())).json()
        assert after == before  # nothing recorded
        # The node's own renewal, with the same key, still goes through.
        again = await renew(cp, "node-a", token, csr_pem(key))
        assert again.status_code == 200, again.text


async def test_a_thiefs_certificate_passes_tls_and_the_control_planes_check_refuses_it(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    """A certificate the CA signed for a thief's key (as renewal did before it was bound to
    the node's key: made here by the CA directly) verifies in TLS under the node's name, as
    a viewer checks it; the control plane's check on its own connections refuses it, and
    the node's earlier certificate once it renewed."""
    async with running(settings_for(tmp_path, artifacts)) as cp:
        key = ec.generate_private_key(ec.SECP256R1())
        boot = await bootstrap_answer(cp, "node-a", key)
        name, ca_pem = f"node-a.{DOMAIN}", (await cp.client.get("/api/node-ca.pem")).text
        thief = ec.generate_private_key(ec.SECP256R1())
        ttl = cp.plane.settings.node_cert_ttl_s
        stolen = cp.plane.node_ca.sign(thief.public_key(), "node-a", cp.plane.clock(), ttl).pem
        thiefs_der = served_certificate(stolen, thief, ca_pem, name, tmp_path)
        with pytest.raises(NodeCertificateRefused, match="not the one on record"):
            verify_node_certificate(cp.plane.engine, "node-a", thiefs_der)
        nodes_der = served_certificate(boot["certificate"], key, ca_pem, name, tmp_path)
        verify_node_certificate(cp.plane.engine, "node-a", nodes_der)

        renewed = await renew(cp, "node-a", boot["callback_token"], csr_pem(key))
        assert renewed.status_code == 200, renewed.text
        with pytest.raises(NodeCertificateRefused, match="an earlier certificate"):
            verify_node_certificate(cp.plane.engine, "node-a", nodes_der)
        new_der = served_certificate(renewed.json()["certificate"], key, ca_pem, name, tmp_path)
        verify_node_certificate(cp.plane.engine, "node-a", new_der)
        with pytest.raises(NodeCertificateRefused, match="no certificate on record"):
            verify_node_certificate(cp.plane.engine, "node-b", new_der)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
