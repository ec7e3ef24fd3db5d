"""A control plane on HTTPS with a private CA: the user-data writes that CA for the control
plane's connections alone (VM_AGENT_CONTROL_PLANE_CA_FILE; the downloads' --cacert), and
the daemon's bootstrap verifies the control plane with it; without it, the daemon keeps
waiting and says why."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import anyio
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud_init.install import CONTROL_PLANE_CA_FILE
from control_plane.app import bind_socket
from tests.daemon.harness import start_process, vm_agent
from tests.provisioning.daemon import env_for, notifications, ready_at_plane, stop
from tests.provisioning.fixtures import BuiltArtifacts
from tests.provisioning.pki import key_pem
from tests.provisioning.plane import plane_settings, serve
from tests.token_files import write_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]


def server_pki(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test control plane CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = (tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key_pem(key))
    return paths


async def test_the_vm_trusts_the_private_ca_and_bootstraps_over_https(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    ca, cert, key = server_pki(tmp_path)
    sock = bind_socket()
    port = sock.getsockname()[1]
    settings = plane_settings(tmp_path / "cp", port, artifacts).model_copy(
        update={
            "public_url": f"https://127.0.0.1:{port}",
            "tls_cert_file": cert,
            "tls_key_file": key,
            "user_data_ca_file": ca,
        }
    )
    client_tls = ssl.create_default_context(cafile=str(ca))
    async with serve(sock, settings, verify=client_tls) as cp, notifications() as notify:
        assert cp.url.startswith("https://")
        answer = await cp.http.post("/api/nodes", json={"node_id": "node-1"}, headers=cp.admin())
        assert answer.status_code == 201, answer.text
        doc = yaml.safe_load(answer.json()["user_data"])
        assert "ca_certs" not in doc  # not system-wide: the agents keep the system's trust
        ca_file = next(f for f in doc["write_files"] if f["path"] == CONTROL_PLANE_CA_FILE)
        assert ca_file["content"] == ca.read_text()
        env_file = next(f for f in doc["write_files"] if f["path"] == "/etc/vm-agent/env")
        assert f"VM_AGENT_CONTROL_PLANE_CA_FILE={CONTROL_PLANE_CA_FILE}\n" in env_file["content"]
        assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n" in env_file["content"]
        token = next(f for f in doc["write_files"] if f["path"] == "/etc/vm-agent/bootstrap-token")
        (tmp_path / "etc").mkdir()
        write_token(tmp_path / "etc" / "bootstrap-token", token["content"].strip())

        # Without the CA (httpx's own bundle) the control plane is not trusted: it waits.
        env = env_for(
            tmp_path, port, notify, VM_AGENT_CONTROL_PLANE_URL=f"https://127.0.0.1:{port}"
        )
        env["VM_AGENT_JWKS_URL"] = f"https://127.0.0.1:{port}/.well-known/jwks.json"
        env.pop("SSL_CERT_FILE", None)
        log = tmp_path / "daemon.log"
        process = await start_process(vm_agent("serve"), env, log)
        await notify.wait_for(
            r"STATUS=bootstrap: waiting .*CERTIFICATE_VERIFY_FAILED.*attempt 2,.*"
        )
        assert await stop(process) == 0
        assert (tmp_path / "etc" / "bootstrap-token").exists()

        # With the CA file as the user-data names it: ready (bootstrap, callbacks, JWKS).
        start = len(notify.messages)
        with_ca = {**env, "VM_AGENT_CONTROL_PLANE_CA_FILE": str(ca)}
        process = await start_process(vm_agent("serve"), with_ca, log)
        await notify.wait_for("READY=1", start=start)
        await ready_at_plane(cp)
        assert await stop(process) == 0
        with anyio.fail_after(5):
            assert not (tmp_path / "etc" / "bootstrap-token").exists()
