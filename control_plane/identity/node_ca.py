"""The CA that signs nodes' TLS certificates, kept in the database (every replica's).

A node makes its key on the VM and sends a certificate request with its bootstrap token;
the certificate names what the control plane decides (``{node_id}.{node_domain}``), never
what the request asks for: only the request's public key is used. The CA's own
certificate carries a name constraint for ``node_domain``, so trusting it (viewers, the
control plane's own connections) vouches for node names and nothing else. A viewer that
reaches a node through a forwarded 127.0.0.1 port verifies by passing the node's name as
``server_hostname``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine, RowMapping, insert, select
from sqlalchemy.exc import IntegrityError

from control_plane.settings import check_domain
from control_plane.storage.db import node_ca

log = logging.getLogger(__name__)

CA_DIR = "node-ca"
CA_KEY = "ca.key"
CA_CERT = "ca.pem"
CA_LIFETIME = dt.timedelta(days=3650)
_ROW = "nodes"  # the table's one row
# Accepts a node whose clock runs a little behind the control plane's.
BACKDATE = dt.timedelta(minutes=5)
MAX_CSR_BYTES = 16 * 1024

Clock = Callable[[], float]
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class CsrError(ValueError):
    """The certificate request cannot be signed; the message says why (no secrets in it)."""


def node_dns_name(node_id: str, domain: str) -> str:
    return f"{node_id}.{domain}"


def public_key_sha256(key: PublicKey) -> str:
    """sha256 of the key's SubjectPublicKeyInfo (DER): how the record names a node's key
    (what `openssl pkey -pubin -outform der | sha256sum` prints)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def request_public_key(csr_pem: str) -> PublicKey:
    """The public key of a well-formed, self-signed request with a key type we accept."""
    if len(csr_pem.encode()) > MAX_CSR_BYTES:
        raise CsrError(f"certificate request larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise CsrError("not a PEM certificate request") from None
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, ValueError):
        valid = False
    if not valid:
        raise CsrError("the certificate request's signature does not verify")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            raise CsrError("EC keys must be on P-256 or P-384")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CsrError("RSA keys must have at least 2048 bits")
        return key
    raise CsrError("the key must be EC (P-256, P-384), Ed25519 or RSA")


@dataclass(frozen=True)
class SignedCertificate:
    pem: str
    serial: int
    not_after: float
    sha256: str  # of the DER: what an operator compares with `openssl x509 -fingerprint`
    public_key_sha256: str  # of the certified key's SubjectPublicKeyInfo


class NodeCA:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, domain: str):
        self._key = key
        self.certificate = cert
        self.domain = check_domain(domain)

    @classmethod
    def generate(cls, domain: str, now: float) -> NodeCA:
        """A new CA (kept nowhere): what `open` stores on first use."""
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(key, _ca_certificate(key, domain, now), domain)

    @classmethod
    def open(
        cls, engine: Engine, domain: str, clock: Clock, *, legacy_dir: Path | None = None
    ) -> NodeCA:
        """Load the CA from the database, which every replica shares. On first use, import
        the one kept under ``legacy_dir/node-ca`` (then removed there) or make one."""
        check_domain(domain)
        files = None if legacy_dir is None else _LegacyFiles(legacy_dir / CA_DIR)
        found = files.load(domain, clock) if files is not None and files.exist() else None
        row = _load(engine)
        if row is None:
            ca = found or cls.generate(domain, clock())
            # Of two replicas on an empty database, one row wins and both load it.
            with contextlib.suppress(IntegrityError), engine.begin() as conn:
                conn.execute(insert(node_ca).values(ca._row(clock())))
            row = _load(engine)
            if row is None:
                raise RuntimeError("the node CA was stored and is not in the database")
        if found is not None and files is not None:
            files.retire(imported=row["cert_pem"] == found.certificate_pem())
        if row["domain"] != domain:
            raise ValueError(
                f"the node CA in the database is for another node domain ({row['domain']}): "
                "nodes' certificates name it, so it cannot change under them"
            )
        loaded = serialization.load_pem_private_key(row["key_pem"].encode(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError("the node CA's key in the database is not an EC private key")
        return cls(loaded, x509.load_pem_x509_certificate(row["cert_pem"].encode()), domain)

    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def _row(self, now: float) -> dict[str, object]:
        return {
            "name": _ROW,
            "domain": self.domain,
            "key_pem": _key_pem(self._key).decode("ascii"),
            "cert_pem": self.certificate_pem(),
            "created_at": now,
        }

    def dns_name(self, node_id: str) -> str:
        return node_dns_name(node_id, self.domain)

    def sign(
        self, public_key: PublicKey, node_id: str, now: float, ttl_s: int
    ) -> SignedCertificate:
        name = self.dns_name(node_id)
        start = dt.datetime.fromtimestamp(now, dt.UTC)
        end = start + dt.timedelta(seconds=ttl_s)
        serial = x509.random_serial_number()
        usage = x509.KeyUsage(
            digital_signature=True,
            key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
            content_commitment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        ca_key_id = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(start - BACKDATE)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        return SignedCertificate(
            pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            serial=serial,
            not_after=end.timestamp(),
            sha256=hashlib.sha256(der).hexdigest(),
            public_key_sha256=public_key_sha256(public_key),
        )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey, domain: str, now: float) -> x509.Certificate:
    start = dt.datetime.fromtimestamp(now, dt.UTC) - BACKDATE
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vm-agent node CA ({domain})")])
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(permitted_subtrees=[x509.DNSName(domain)], excluded_subtrees=None),
            critical=True,
        )
        .add_extension(key_id, critical=False)
        .sign(key, hashes.SHA256())
    )


def _load(engine: Engine) -> RowMapping | None:
    with engine.connect() as conn:
        return conn.execute(select(node_ca).where(node_ca.c.name == _ROW)).mappings().first()


@dataclass(frozen=True)
class _LegacyFiles:
    """Where a control plane kept the CA before it moved into the database."""

    directory: Path

    def exist(self) -> bool:
        return (self.directory / CA_KEY).exists()

    def load(self, domain: str, clock: Clock) -> NodeCA:
        key_path, cert_path = self.directory / CA_KEY, self.directory / CA_CERT
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
        if not cert_path.exists():  # a crash between writing the key and the certificate
            return NodeCA(key, _ca_certificate(key, domain, clock()), domain)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        constrained = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        if [n.value for n in constrained.permitted_subtrees or []] != [domain]:
            raise ValueError(
                f"{cert_path} is for another node domain; "
                f"move {self.directory} away to make a new CA"
            )
        return NodeCA(key, cert, domain)

    def retire(self, *, imported: bool) -> None:
        if not imported:
            # Another replica's CA is the one in the database: nodes this one signed (when
            # each replica kept its own) need new certificates.
            log.warning(
                "the database holds another node CA than the one in %s, which is left there: "
                "nodes it signed need a new certificate",
                self.directory,
            )
            return
        # A second copy of the CA's key, no longer used, is a liability.
        for name in (CA_KEY, CA_CERT):
            (self.directory / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()
        log.info("the node CA of %s is the database's; removed it there", self.directory)
