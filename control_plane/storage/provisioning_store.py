"""Storage for node creation and the bootstrap exchange (table ``node_provisioning``).

The bootstrap token is stored as its sha256 only (it is 256 random bits: no slow hash
needed). Spending it is one conditional UPDATE (unspent, unexpired, same hash), so of two
exchanges racing with the same token exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Column, Engine, Float, String, Table, insert, select, update
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

    def columns(self) -> dict[str, object]:
        """As the node's provisioning row holds it."""
        return {
            "cert_serial": format(self.serial, "x"),
            "cert_sha256": self.sha256,
            "cert_not_after": self.not_after,
        }


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
    """Record a renewed certificate of a bootstrapped node; False if there is none such."""
    t = node_provisioning
    with engine.begin() as conn:
        changed = conn.execute(
            update(t)
            .where(t.c.node_id == node_id, t.c.bootstrapped_at.is_not(None))
            .values(**cert.columns())
        ).rowcount
    return bool(changed == 1)


def provisioning_of(engine: Engine, node_id: str) -> dict[str, Any] | None:
    """The record without the token hash (for admins)."""
    t = node_provisioning
    columns = [c for c in t.c if c.name != "bootstrap_token_sha256"]
    with engine.connect() as conn:
        row = conn.execute(select(*columns).where(t.c.node_id == node_id)).mappings().first()
    return dict(row) if row else None
