"""The node CA: names it decides, keys it accepts, and certificates a real TLS client verifies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from control_plane.identity.node_ca import CsrError, NodeCA, request_public_key
from control_plane.settings import check_domain
from tests.provisioning.pki import csr_pem, handshake

DOMAIN = "nodes.test.internal"


def ca(domain: str = DOMAIN) -> NodeCA:
    return NodeCA.generate(domain, time.time())


def test_the_certificate_names_what_the_control_plane_decides() -> None:
    authority = ca()
    key = ec.generate_private_key(ec.SECP256R1())
    asked = csr_pem(key, ("evil.example.com", "cp.example.com"))
    signed = authority.sign(request_public_key(asked), "node-7", time.time(), 3600)
    cert = x509.load_pem_x509_certificate(signed.pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [f"node-7.{DOMAIN}"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()
    assert signed.not_after - time.time() == pytest.approx(3600, abs=5)


def test_a_real_tls_client_verifies_the_node_by_its_name(tmp_path: Path) -> None:
    authority = ca()
    key = ec.generate_private_key(ec.SECP256R1())
    signed = authority.sign(request_public_key(csr_pem(key)), "node-7", time.time(), 3600)
    ca_pem = authority.certificate_pem()
    assert handshake(signed.pem, key, ca_pem, f"node-7.{DOMAIN}", tmp_path) == "ok"
    # The name it asked for, another node's name, or the forwarded address: refused.
    for wrong in ("evil.example.com", f"node-8.{DOMAIN}", "127.0.0.1"):
        assert "CERTIFICATE_VERIFY_FAILED" in handshake(signed.pem, key, ca_pem, wrong, tmp_path)
    # Another control plane's CA does not vouch for it.
    other = ca().certificate_pem()
    result = handshake(signed.pem, key, other, f"node-7.{DOMAIN}", tmp_path)
    assert "CERTIFICATE_VERIFY_FAILED" in result


def test_the_name_constraint_keeps_the_ca_to_its_domain() -> None:
    authority = ca()
    constraint = authority.certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraint.critical
    assert [n.value for n in constraint.value.permitted_subtrees or []] == [DOMAIN]


def test_rsa_keys_are_signed_too(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    authority = ca()
    signed = authority.sign(request_public_key(csr_pem(key)), "n1", time.time(), 60)
    assert handshake(signed.pem, key, authority.certificate_pem(), f"n1.{DOMAIN}", tmp_path) == "ok"


def tampered_csr() -> str:
    pem = csr_pem()
    lines = pem.splitlines()
    body = lines[3]
    lines[3] = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("pem", "says"),
    [
        ("not a request", "not a PEM"),
        ("x" * 20_000, "larger than"),
        (csr_pem(ec.generate_private_key(ec.SECP192R1())), "P-256 or P-384"),
        (csr_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "2048"),
    ],
)
def test_bad_requests_are_refused_saying_why(pem: str, says: str) -> None:
    with pytest.raises(CsrError, match=says):
        request_public_key(pem)


def test_a_request_whose_signature_does_not_verify_is_refused() -> None:
    with pytest.raises(CsrError):
        request_public_key(tampered_csr())


@pytest.mark.parametrize("domain", ["internal", "Nodes.x", "a..b", "x.-y", "a.b/c", "a b.c", ""])
def test_bad_domains(domain: str) -> None:
    with pytest.raises(ValueError):
        check_domain(domain)
