"""Schema (SQLAlchemy Core) and engine; the schema itself is built by Alembic migrations.

Everything here is portable between SQLite (the default, a file under the state
directory) and PostgreSQL: no dialect-specific SQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
)

DB_FILENAME = "control-plane.db"

metadata = MetaData()

# Legacy rows hold the GitHub id in `installation_id`; new rows hold "{user_id}:{github_id}"
# there (the storage key other rows reference) and the GitHub id in `external_installation_id`.
github_installations = Table(
    "github_installations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("installation_id", String(255), nullable=False, unique=True),
    Column("external_installation_id", String(64), nullable=True),
    Column("user_id", String(128), nullable=False),
    Column("account_login", String(255), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_github_installations_external_installation_id", "external_installation_id"),
    Index(
        "uq_github_installations_user_external",
        "user_id",
        "external_installation_id",
        unique=True,
    ),
)

nodes = Table(
    "nodes",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("version", String(64), nullable=True),
    Column("capacity", JSON, nullable=True),
    Column("ready_at", Float, nullable=True),
    Column("last_heartbeat_at", Float, nullable=True),
    Column("sessions", JSON, nullable=True),
    Column("usage", JSON, nullable=True),
)

node_events = Table(
    "node_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("node_id", String(128), nullable=False),
    Column("session_id", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Float, nullable=False),
    Column("type", String(64), nullable=False),
    Column("data", JSON, nullable=True),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("node_id", "session_id", "seq", name="uq_node_events_node_session_seq"),
)

session_bindings = Table(
    "session_bindings",
    metadata,
    Column("session_id", String(128), primary_key=True),
    Column("node_id", String(128), nullable=False),
    Column("bound_at", Float, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("provider", String(64), nullable=True),
    Column("requested_vm_size", String(64), nullable=True),
    Column("vm_size_source", String(64), nullable=True),
    Column("requirements_json", Text, nullable=False),
    Column("reservation_json", Text, nullable=False),
    Column("reservation_provenance_json", Text, nullable=False),
    Column("placement_explanation", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
)


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / DB_FILENAME}"


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets a busy timeout and WAL so threads can share it."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine
