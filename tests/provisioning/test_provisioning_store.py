"""The provisioning store's guards on SQLite and PostgreSQL, and the pure verdicts beside them:
a bootstrap token is spent once; a renewal is recorded for the node's key only; the
certificate on record is the only one the control plane's check accepts."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, select, update

from control_plane.identity.node_ca import NodeCA
from control_plane.identity.node_certs import (
    NodeCertificateRefused,
    RenewalVerdict,
    check_certificate,
    renewal_verdict,
    verify_node_certificate,
)
from control_plane.provisioning.userdata import Verdict, bootstrap_verdict, token_digest
from control_plane.storage import provisioning_store as store
from control_plane.storage.provisioning_store import (
    BootstrapRecord,
    CertificateOnRecord,
    IssuedCertificate,
    node_provisioning,
)

NOW = 1_800_000_000.0
TOKEN = "the-bootstrap-token"
DOMAIN = "nodes.test.internal"


def new_node(engine: Engine, node_id: str = "node-a", expires_at: float = NOW + 600) -> None:
    store.create_node(
        engine,
        store.NewNode(
            node_id=node_id,
            hostname=node_id,
            dns_name=f"{node_id}.{DOMAIN}",
            created_at=NOW,
            created_by="admin",
            params={},
            bootstrap_token_sha256=token_digest(TOKEN),
            bootstrap_expires_at=expires_at,
        ),
    )


def issued(serial: int, key: str = "k" * 64) -> IssuedCertificate:
    return IssuedCertificate(serial, f"{serial:064x}", NOW + 3600, key)


def row(engine: Engine, node_id: str = "node-a") -> dict[str, object]:
    with engine.connect() as conn:
        found = conn.execute(
            select(node_provisioning).where(node_provisioning.c.node_id == node_id)
        ).mappings()
        return dict(found.one())


# --- the bootstrap token -------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "presented", "now", "verdict"),
    [
        (None, TOKEN, NOW, Verdict.REFUSED),  # no such node
        (BootstrapRecord(token_digest(TOKEN), NOW + 1, False), TOKEN, NOW, Verdict.ACCEPT),
        (BootstrapRecord(token_digest(TOKEN), NOW + 1, False), "wrong", NOW, Verdict.REFUSED),
        (BootstrapRecord(token_digest(TOKEN), NOW + 1, True), TOKEN, NOW, Verdict.SPENT),
        (BootstrapRecord(token_digest(TOKEN), NOW, False), TOKEN, NOW, Verdict.EXPIRED),
        (BootstrapRecord(token_digest(TOKEN), NOW - 1, False), TOKEN, NOW, Verdict.EXPIRED),
        # Only the holder of the right token learns that it was spent or has expired.
        (BootstrapRecord(token_digest(TOKEN), NOW + 1, True), "wrong", NOW, Verdict.REFUSED),
        (BootstrapRecord(token_digest(TOKEN), NOW - 1, False), "wrong", NOW, Verdict.REFUSED),
        # Spent and expired: spent says more to the node that spent it.
        (BootstrapRecord(token_digest(TOKEN), NOW - 1, True), TOKEN, NOW, Verdict.SPENT),
    ],
)
def test_bootstrap_verdict(
    record: BootstrapRecord | None, presented: str, now: float, verdict: Verdict
) -> None:
    assert bootstrap_verdict(record, presented, now) is verdict


@pytest.mark.integration
def test_a_bootstrap_token_is_spent_once(engine: Engine) -> None:
    new_node(engine)
    assert store.spend_bootstrap_token(engine, "node-a", token_digest(TOKEN), NOW, issued(1))
    # The second spend (a later exchange that passed the verdict before the first
    # committed) is refused by the UPDATE's guard itself, and records nothing.
    assert not store.spend_bootstrap_token(engine, "node-a", token_digest(TOKEN), NOW, issued(2))
    assert row(engine)["cert_serial"] == "1"
    assert row(engine)["bootstrapped_at"] == NOW
    record = store.bootstrap_record(engine, "node-a")
    assert record is not None and record.spent


@pytest.mark.integration
def test_a_wrong_or_expired_token_spends_nothing(engine: Engine) -> None:
    new_node(engine, expires_at=NOW + 10)
    digest = token_digest(TOKEN)
    assert not store.spend_bootstrap_token(engine, "node-a", token_digest("x"), NOW, issued(1))
    assert not store.spend_bootstrap_token(engine, "node-b", digest, NOW, issued(1))
    assert not store.spend_bootstrap_token(engine, "node-a", digest, NOW + 10, issued(1))
    assert row(engine)["bootstrapped_at"] is None and row(engine)["cert_serial"] is None
    assert store.spend_bootstrap_token(engine, "node-a", digest, NOW + 9, issued(1))


# --- renewal: the node's key only ----------------------------------------------------


def on_record(key: str | None) -> CertificateOnRecord:
    return CertificateOnRecord(1, "f" * 64, NOW + 3600, key)


@pytest.mark.parametrize(
    ("record", "key", "verdict"),
    [
        (None, "a" * 64, RenewalVerdict.NOT_BOOTSTRAPPED),
        (on_record("a" * 64), "a" * 64, RenewalVerdict.SIGN),
        (on_record("a" * 64), "b" * 64, RenewalVerdict.OTHER_KEY),
        (on_record(None), "b" * 64, RenewalVerdict.SIGN),  # from before 0011: records it
    ],
)
def test_renewal_verdict(
    record: CertificateOnRecord | None, key: str, verdict: RenewalVerdict
) -> None:
    assert renewal_verdict(record, key) is verdict


@pytest.mark.integration
def test_a_renewal_is_recorded_for_the_key_on_record_only(engine: Engine) -> None:
    new_node(engine)
    assert not store.record_renewal(engine, "node-a", issued(2, "a" * 64))  # not bootstrapped
    assert store.certificate_on_record(engine, "node-a") is None
    store.spend_bootstrap_token(engine, "node-a", token_digest(TOKEN), NOW, issued(1, "a" * 64))
    assert not store.record_renewal(engine, "node-a", issued(2, "b" * 64))
    assert store.certificate_on_record(engine, "node-a") == CertificateOnRecord(
        1, f"{1:064x}", NOW + 3600, "a" * 64
    )
    assert store.record_renewal(engine, "node-a", issued(3, "a" * 64))
    assert store.certificate_on_record(engine, "node-a") == CertificateOnRecord(
        3, f"{3:064x}", NOW + 3600, "a" * 64
    )
    assert store.certificate_on_record(engine, "node-b") is None


@pytest.mark.integration
def test_a_row_from_before_the_key_was_recorded_is_bound_by_its_next_renewal(
    engine: Engine,
) -> None:
    new_node(engine)
    store.spend_bootstrap_token(engine, "node-a", token_digest(TOKEN), NOW, issued(1, "a" * 64))
    with engine.begin() as conn:  # as migration 0011 leaves a row bootstrapped before it
        conn.execute(update(node_provisioning).values(cert_public_key_sha256=None))
    assert store.record_renewal(engine, "node-a", issued(2, "c" * 64))
    assert not store.record_renewal(engine, "node-a", issued(3, "a" * 64))
    record = store.certificate_on_record(engine, "node-a")
    assert record is not None and (record.serial, record.public_key_sha256) == (2, "c" * 64)


# --- the control plane's check of a node's certificate --------------------------------


def signed_der(ca: NodeCA, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, IssuedCertificate]:
    signed = ca.sign(key.public_key(), "node-a", NOW, 3600)
    der = x509.load_pem_x509_certificate(signed.pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    return der, IssuedCertificate(
        signed.serial, signed.sha256, signed.not_after, signed.public_key_sha256
    )


def test_check_certificate_accepts_only_the_one_on_record() -> None:
    ca = NodeCA.generate(DOMAIN, NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    der, cert = signed_der(ca, key)
    record = CertificateOnRecord(cert.serial, cert.sha256, cert.not_after, cert.public_key_sha256)
    check_certificate("node-a", record, der)
    earlier, _ = signed_der(ca, key)  # the same key, another serial: an earlier one
    thief, _ = signed_der(ca, ec.generate_private_key(ec.SECP256R1()))
    same_serial = CertificateOnRecord(cert.serial, "0" * 64, cert.not_after, None)
    for node_record, served, says in [
        (record, earlier, "not the one on record"),
        (record, thief, "not the one on record"),
        (same_serial, der, "another content"),
        (None, der, "no certificate on record"),
        (record, b"\x30\x03\x02\x01\x01", "no readable certificate"),
    ]:
        with pytest.raises(NodeCertificateRefused, match=says):
            check_certificate("node-a", node_record, served)


@pytest.mark.integration
def test_verify_node_certificate_reads_the_record(engine: Engine) -> None:
    ca = NodeCA.generate(DOMAIN, NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    first_der, first = signed_der(ca, key)
    new_node(engine)
    with pytest.raises(NodeCertificateRefused, match="no certificate on record"):
        verify_node_certificate(engine, "node-a", first_der)
    store.spend_bootstrap_token(engine, "node-a", token_digest(TOKEN), NOW, first)
    verify_node_certificate(engine, "node-a", first_der)
    verify_node_certificate(engine, "node-a", x509.load_der_x509_certificate(first_der))
    second_der, second = signed_der(ca, key)
    assert store.record_renewal(engine, "node-a", second)
    with engine.connect() as conn:  # on a connection the caller holds, too
        verify_node_certificate(conn, "node-a", second_der)
        with pytest.raises(NodeCertificateRefused, match=f"serial {first.serial:x}"):
            verify_node_certificate(conn, "node-a", first_der)
    assert hashlib.sha256(second_der).hexdigest() == second.sha256
