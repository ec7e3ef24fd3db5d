"""Which node certificates the control plane stands behind: renewal bound to the node's key,
and the check its own connections to a node make on the certificate the node served.

A callback token vouches for a node's reports, not for its TLS key: a thief holding one must
not get a certificate for a key of its own (viewers would take it for the node). So a renewal
is signed only for the key of the certificate on record, which the bootstrap recorded (the
bootstrap token is single use and reaches only the VM). A row bootstrapped before the key was
recorded (migration 0011) has none: its next renewal records the key it is for, once; every
renewal after that must match it. That one renewal is the remaining window (docs/threat-model.md).

Viewers verify a node's certificate against the node CA and the node's name only, so a
certificate the CA signed earlier (a stolen one, or one signed for another key before this
check existed) passes for them until it expires: hence a short certificate life
(`node_cert_ttl_s`). The control plane's own connections do better: `verify_node_certificate`
accepts only the certificate on record, by serial and fingerprint.
"""

from __future__ import annotations

import enum
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, Engine

from control_plane.storage.provisioning_store import CertificateOnRecord, certificate_on_record


class RenewalVerdict(enum.Enum):
    SIGN = "sign"
    NOT_BOOTSTRAPPED = "no bootstrapped node of that id"
    OTHER_KEY = (
        "forbidden: the certificate request is for another key than the node's certificate "
        "on record; a renewal keeps the node's key"
    )


def renewal_verdict(record: CertificateOnRecord | None, request_key_sha256: str) -> RenewalVerdict:
    """Whether a renewal for a request with this key is signed (pure)."""
    if record is None:
        return RenewalVerdict.NOT_BOOTSTRAPPED
    if record.public_key_sha256 is None:  # from before 0011: this renewal records the key
        return RenewalVerdict.SIGN
    if record.public_key_sha256 != request_key_sha256:
        return RenewalVerdict.OTHER_KEY
    return RenewalVerdict.SIGN


class NodeCertificateRefused(Exception):
    """The certificate a node served is not the one on record for it (one line, no secrets)."""


def check_certificate(node_id: str, record: CertificateOnRecord | None, der: bytes) -> None:
    """Raises `NodeCertificateRefused` unless `der` is the certificate on record (pure)."""
    if record is None:
        raise NodeCertificateRefused(f"node {node_id} has no certificate on record")
    try:
        serial = x509.load_der_x509_certificate(der).serial_number
    except ValueError:
        raise NodeCertificateRefused(f"node {node_id} served no readable certificate") from None
    if serial != record.serial:
        raise NodeCertificateRefused(
            f"node {node_id} served certificate serial {serial:x}, not the one on record "
            f"({record.serial:x}): an earlier certificate, or one that is not the node's"
        )
    if hashlib.sha256(der).hexdigest() != record.sha256:
        raise NodeCertificateRefused(
            f"node {node_id} served a certificate with the serial on record and another content"
        )


def verify_node_certificate(
    db: Engine | Connection, node_id: str, cert: x509.Certificate | bytes
) -> None:
    """For the control plane's connections to a node, after TLS verified the chain and the
    node's name: raises `NodeCertificateRefused` unless `cert` (or its DER, as
    ``ssl_object.getpeercert(binary_form=True)`` gives it) is the node's certificate on
    record. Reads the database (blocking): call it from a worker thread in async code.

    Just after a renewal is recorded and before the node loads the new certificate (or when
    the node never got the renewal's answer, until its retry), this refuses the node's
    previous certificate: a caller retries the connection."""
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    check_certificate(node_id, certificate_on_record(db, node_id), der)


def certificate_on_record_refusal(db: Engine | Connection, node_id: str, der: bytes) -> str | None:
    """``verify_node_certificate`` as the node connections' check: why it is refused, or None."""
    try:
        verify_node_certificate(db, node_id, der)
    except NodeCertificateRefused as exc:
        return str(exc)
    return None
