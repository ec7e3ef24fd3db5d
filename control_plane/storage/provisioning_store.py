"""Storage for node creation and the bootstrap exchange (table ``node_provisioning``).

The bootstrap token is stored as its sha256 only (it is 256 random bits: no slow hash
needed). Spending it is one conditional UPDATE (unspent, unexpired, same hash), so of two
exchanges racing with the same token exactly one wins.

Each node's certificate on record (serial, fingerprint, the sha256 of its public key) is
the one the control plane's own connections accept; a renewal is recorded only for the
key on record (0011), so a callback token alone cannot move the node to another key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Float,
    String,
    Table,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from control_plane.storage.db import metadata, nodes

node_provisioning = Table(
    "node_provisioning",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("hostname", String(63), nullable=False),
    Column("dns_name", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("params", JSON, nullable=False),
    Column("bootstrap_token_sha256", String(64), nullable=False),
    Column("bootstrap_expires_at", Float, nullable=False),
    Column("bootstrapped_at", Float, nullable=True),
    Column("cert_serial", String(64), nullable=True),
    Column("cert_sha256", String(64), nullable=True),
    Column("cert_not_after", Float, nullable=True),
    # sha256 of the certificate's SubjectPublicKeyInfo (DER); null on rows from before 0011
    Column("cert_public_key_sha256", String(64), nullable=True),
)


class NodeExists(Exception):
    pass


@dataclass(frozen=True)
class NewNode:
    node_id: str
    hostname: str
    dns_name: str
    created_at: float
    created_by: str
    params: dict[str, Any]
    bootstrap_token_sha256: str
    bootstrap_expires_at: float


@dataclass(frozen=True)
class BootstrapRecord:
    """What the bootstrap decision needs of a node's row."""

    token_sha256: str
    expires_at: float
    spent: bool


@dataclass(frozen=True)
class IssuedCertificate:
    serial: int
    sha256: str
    not_after: float
    public_key_sha256: str

    def columns(self) -> dict[str, object]:
        """As the node's provisioning row holds it."""
        return {
            "cert_serial": format(self.serial, "x"),
            "cert_sha256": self.sha256,
            "cert_not_after": self.not_after,
            "cert_public_key_sha256": self.public_key_sha256,
        }


@dataclass(frozen=True)
class CertificateOnRecord:
    """A bootstrapped node's current certificate, as recorded."""

    serial: int
    sha256: str
    not_after: float
    public_key_sha256: str | None  # None: bootstrapped before 0011, not renewed since


def create_node(engine: Engine, node: NewNode) -> None:
    """The node's record (also in ``nodes``, where its reports land); NodeExists if taken."""
    try:
        with engine.begin() as conn:
            taken = conn.execute(
                select(nodes.c.node_id).where(nodes.c.node_id == node.node_id)
            ).first()
            if taken is not None:
                raise NodeExists(node.node_id)
            conn.execute(insert(node_provisioning).values(**node.__dict__))
            conn.execute(insert(nodes).values(node_id=node.node_id))
    except IntegrityError:
        raise NodeExists(node.node_id) from None


def bootstrap_record(engine: Engine, node_id: str) -> BootstrapRecord | None:
    t = node_provisioning
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.bootstrap_token_sha256, t.c.bootstrap_expires_at, t.c.bootstrapped_at).where(
                t.c.node_id == node_id
            )
        ).first()
    if row is None:
        return None
    return BootstrapRecord(str(row[0]), float(row[1]), row[2] is not None)


def spend_bootstrap_token(
    engine: Engine, node_id: str, token_sha256: str, now: float, cert: IssuedCertificate
) -> bool:
    """Mark the token spent and record the certificate; False if it was spent or expired."""
    t = node_provisioning
    with engine.begin() as conn:
        changed = conn.execute(
            update(t)
            .where(
                t.c.node_id == node_id,
                t.c.bootstrap_token_sha256 == token_sha256,
                t.c.bootstrapped_at.is_(None),
                t.c.bootstrap_expires_at > now,
            )
            .values(bootstrapped_at=now, **cert.columns())
        ).rowcount
    return bool(changed == 1)


def record_renewal(engine: Engine, node_id: str, cert: IssuedCertificate) -> bool:
    """Record a renewed certificate of a bootstrapped node, for the key on record (or any
    key where none is recorded yet); False if there is no such node or it has another key.
    One conditional UPDATE: of two renewals for different keys of a row with none on
    record, one wins."""
    t = node_provisioning
    key = t.c.cert_public_key_sha256
    with engine.begin() as conn:
        changed = conn.execute(
            update(t)
            .where(
                t.c.node_id == node_id,
                t.c.bootstrapped_at.is_not(None),
                or_(key.is_(None), key == cert.public_key_sha256),
            )
            .values(**cert.columns())
        ).rowcount
    return bool(changed == 1)


def certificate_on_record(db: Engine | Connection, node_id: str) -> CertificateOnRecord | None:
    """The node's current certificate; None if there is no bootstrapped node of that id."""
    t = node_provisioning
    query = select(
        t.c.cert_serial, t.c.cert_sha256, t.c.cert_not_after, t.c.cert_public_key_sha256
    ).where(t.c.node_id == node_id, t.c.bootstrapped_at.is_not(None))
    if isinstance(db, Engine):
        with db.connect() as conn:
            row = conn.execute(query).first()
    else:
        row = db.execute(query).first()
    if row is None or row[0] is None:
        return None
    return CertificateOnRecord(int(row[0], 16), str(row[1]), float(row[2]), row[3])


def provisioning_of(engine: Engine, node_id: str) -> dict[str, Any] | None:
    """The record without the token hash (for admins)."""
    t = node_provisioning
    columns = [c for c in t.c if c.name != "bootstrap_token_sha256"]
    with engine.connect() as conn:
        row = conn.execute(select(*columns).where(t.c.node_id == node_id)).mappings().first()
    return dict(row) if row else None


def refresh_bootstrap_token(
    engine: Engine, node_id: str, token_sha256: str, expires_at: float
) -> bool:
    """A new bootstrap token for a node whose VM is made again (its first create was never
    applied); only while the node has not bootstrapped. False otherwise."""
    t = node_provisioning
    with engine.begin() as conn:
        done = conn.execute(
            update(t)
            .where(t.c.node_id == node_id)
            .where(t.c.bootstrapped_at.is_(None))
            .values(bootstrap_token_sha256=token_sha256, bootstrap_expires_at=expires_at)
        )
    return done.rowcount == 1
