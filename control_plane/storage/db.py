"""Schema (SQLAlchemy Core) and engine; the schema itself is built by Alembic migrations.

The schema runs on SQLite (the default, a file under the state directory) and on
PostgreSQL (psycopg 3); the SQL is portable, apart from `ON CONFLICT DO NOTHING`, which
both spell the same way (see node_store).
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

# A task id is unique per owner (0010); rows from before 0006 have owner "" (no user's).
tasks = Table(
    "tasks",
    metadata,
    Column("owner", String(128), primary_key=True),
    Column("task_id", String(128), primary_key=True),
    Column("agent", String(128), nullable=True),
    Column("workspace_id", String(64), nullable=True),
    Column("provider", String(64), nullable=True),
    Column("requested_vm_size", String(64), nullable=True),
    Column("vm_size_source", String(64), nullable=True),
    Column("requirements_json", Text, nullable=False),
    Column("reservation_json", Text, nullable=False),
    Column("reservation_provenance_json", Text, nullable=False),
    Column("placement_explanation_json", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# The control plane's signing keys, shared by every replica (0004).
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_key_pem", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("not_before", Float, nullable=False),
)

# The CA that signs nodes' TLS certificates: one row, shared by every replica (0008).
node_ca = Table(
    "node_ca",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("domain", String(255), nullable=False),
    Column("key_pem", Text, nullable=False),
    Column("cert_pem", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Every callback token minted, by jti; a refresh sets `revoked_at` of the one replaced (0004).
callback_tokens = Table(
    "callback_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("node_id", String(128), nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("replaces", String(64), nullable=True),
    Column("revoked_at", Float, nullable=True),
    Index("ix_callback_tokens_node_id", "node_id"),
)

# Facts about this database, by name (0004: when the callback token ledger began).
control_plane_meta = Table(
    "control_plane_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Stored defaults of each layer, one row per version; the newest version is the current
# one (0005). Names are scoped per owner (0010): alice's project `p` is not bob's. A user's
# own layer is owned by that user, the platform layer by "platform".
layer_defaults = Table(
    "layer_defaults",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("owner", String(128), primary_key=True),
    Column("layer_id", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("requirements_json", Text, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Where a task runs: a workspace on a node, with the audit of its demand and placement (0006).
workspaces = Table(
    "workspaces",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("task_id", String(128), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("node_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("requested_vm_size", String(64), nullable=False),
    Column("vm_size_source", String(64), nullable=False),
    Column("requirements_json", Text, nullable=False),
    Column("reservation_json", Text, nullable=False),
    Column("reservation_provenance_json", Text, nullable=False),
    Column("placement_explanation_json", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("released_at", Float, nullable=True),
    # The project the task named (its owner and id), for the project quotas (0010).
    Column("project_owner", String(128), nullable=True),
    Column("project_id", String(128), nullable=True),
    Index("ix_workspaces_node_state", "node_id", "state"),
    Index("ix_workspaces_owner_state", "owner", "state"),
    Index("ix_workspaces_project", "project_owner", "project_id"),
    UniqueConstraint("owner", "task_id", name="uq_workspaces_owner_task"),
)

# Who else may read and use a project, agent profile or trigger: an admin's list (0010).
layer_shares = Table(
    "layer_shares",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("owner", String(128), primary_key=True),
    Column("layer_id", String(128), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("granted_by", String(128), nullable=False),
    Column("granted_at", Float, nullable=False),
)

# A node that placement asked for (its id chosen here), until it reports `ready` (0006).
node_requests = Table(
    "node_requests",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("provider", String(64), nullable=False),
    Column("size", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("workspace_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

# Agent sessions the control plane made (placing a task, or a user's explicit call): the
# only sessions whose agent credentials a node is given (0006).
agent_sessions = Table(
    "agent_sessions",
    metadata,
    Column("session_id", String(128), primary_key=True),
    Column("node_id", String(128), nullable=False),
    Column("agent", String(128), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("workspace_id", String(64), nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Index("ix_agent_sessions_workspace_id", "workspace_id"),
    Index("ix_agent_sessions_owner", "owner", "ended_at"),
)

# One row; placement updates it first, so placements (of every replica) take turns (0006).
placement_lock = Table(
    "placement_lock",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("placements", BigInteger, nullable=False),
)


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / DB_FILENAME}"


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for `url`: a libpq URL (postgresql://, postgres://) means psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets a busy timeout and WAL so threads can share it."""
    url = engine_url(url)
    if not url.startswith("sqlite"):
        # Requests run in worker threads (anyio's default limit is 40): enough connections
        # that a burst of callbacks waits on the database, not on the pool.
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine
