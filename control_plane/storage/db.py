"""Schema (SQLAlchemy Core); the schema itself is built by Alembic migrations, and the
engine is made in ``engine`` (re-exported here).

The schema runs on SQLite (the default, a file under the state directory) and on
PostgreSQL (psycopg 3); the SQL is portable, apart from `ON CONFLICT DO NOTHING`, which
both spell the same way (see node_store).

A SQLite database holds the signing keys and the node CA's key: its file is made (or set)
0600 before SQLite opens it, whatever the umask, and SQLite gives the `-wal` and `-shm`
files it makes the database file's mode.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from control_plane.storage.engine import (
    DB_FILENAME,
    PRIVATE_FILE_MODE,
    SQLITE_SIDE_FILES,
    DatabaseFileError,
    engine_url,
    is_postgres,
    make_engine,
    make_private_sqlite,
    sqlite_url,
)
from control_plane.storage.github_schema import github_installations, workspace_repositories
from control_plane.storage.meta import metadata

__all__ = [
    "DB_FILENAME",
    "PRIVATE_FILE_MODE",
    "SQLITE_SIDE_FILES",
    "DatabaseFileError",
    "engine_url",
    "github_installations",
    "is_postgres",
    "make_engine",
    "make_private_sqlite",
    "metadata",
    "sqlite_url",
    "workspace_repositories",
]

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

# What each node's stored events take (node_store.event_size), bounded per node (0009).
node_event_bytes = Table(
    "node_event_bytes",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("event_bytes", BigInteger, nullable=False),
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

# `task_id`: the dispatcher's key, unique overall; `client_task_id`: the owner's `taskId`,
# unique per owner (0010). Rows from before 0006 have owner "" (no user's).
tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("client_task_id", String(128), nullable=False),
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
    # 0014: the work, its status and outcome, timings, the dispatcher's lease
    Column("prompt_json", Text, nullable=True),
    Column("permission_policy", String(16), nullable=True),
    Column("follow_ups", Boolean, nullable=False, server_default=false()),
    Column("status", String(32), nullable=False, server_default="queued"),
    Column("outcome_json", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("submitted_at", Float, nullable=True),
    Column("node_ready_at", Float, nullable=True),
    Column("first_update_at", Float, nullable=True),
    Column("ended_at", Float, nullable=True),
    Column("session_started_at", Float, nullable=True),
    Column("session_stopped_at", Float, nullable=True),
    Column("cancel_asked_at", Float, nullable=True),
    Column("cancel_sent_at", Float, nullable=True),
    Column("events_seq", BigInteger, nullable=False, server_default="0"),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("row_version", Integer, nullable=False, server_default="0"),
    # 0023: the resolved agent settings (what `session/start` carries, every value) and
    # what answers show (each field's value and provenance, MCP env/header names only).
    Column("agent_settings_json", Text, nullable=True),
    Column("agent_settings_provenance_json", Text, nullable=True),
    Index("ix_tasks_status_lease", "status", "lease_until"),
    UniqueConstraint("owner", "client_task_id", name="uq_tasks_owner_client_task"),
)

# Every status change of a task, with its time and cause (0014).
task_transitions = Table(
    "task_transitions",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("task_id", String(128), nullable=False),
    Column("from_status", String(32), nullable=True),
    Column("status", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("cause", Text, nullable=False),
    Index("ix_task_transitions_task_id", "task_id"),
)

# The prompts of a task, the first and each follow-up; the id is made before sending (0014).
task_prompts = Table(
    "task_prompts",
    metadata,
    Column("prompt_id", String(64), primary_key=True),
    Column("task_id", String(128), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("prompt_json", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending, sent, finished
    Column("outcome_json", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    UniqueConstraint("task_id", "seq", name="uq_task_prompts_task_seq"),
)

# A user's answer to a task's permission request, until the dispatcher delivered it (0014).
task_permission_answers = Table(
    "task_permission_answers",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("option_id", String(256), nullable=True),
    Column("answered_by", String(128), nullable=False),
    Column("answered_at", Float, nullable=False),
    Column("sent_at", Float, nullable=True),
)

# A mode or model change a task's owner asked for while it runs, until the dispatcher
# relayed it to the node (`sent_at`), with the node's or agent's refusal if any (0023).
task_setting_changes = Table(
    "task_setting_changes",
    metadata,
    Column("change_id", String(64), primary_key=True),
    Column("task_id", String(128), nullable=False),
    Column("field", String(16), nullable=False),  # mode, model
    Column("value", Text, nullable=False),
    Column("asked_by", String(128), nullable=False),
    Column("asked_at", Float, nullable=False),
    Column("sent_at", Float, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_task_setting_changes_task", "task_id", "asked_at"),
)

# Where the control plane reaches a node's `/v1/ws`, and its workspace root (0014).
node_addresses = Table(
    "node_addresses",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("viewer_url", String(512), nullable=False),
    Column("workspace_root", String(512), nullable=False),
    Column("updated_at", Float, nullable=False),
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

# Stored defaults of each layer, one row per version, the newest current (0005); names per
# owner (0010): a user's own layer is that user's, the platform layer "platform"'s.
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
    Column("agent_settings_json", Text, nullable=True),  # 0023; NULL: none
)

# Where a task runs: a workspace on a node, with the audit of its demand and placement
# (0006); `task_id` is the owner's `taskId` (tasks.client_task_id), unique per owner (0010).
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
    Column("replaces", String(128), nullable=True),  # a node never ready, whose tasks (0021)
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


# A provider's API credentials per user (bring your own cloud), sealed: never plaintext (0017).
provider_credentials = Table(
    "provider_credentials",
    metadata,
    Column("owner_kind", String(16), primary_key=True),
    Column("owner_id", String(128), primary_key=True),
    Column("provider", String(64), primary_key=True),
    Column("sealed", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# A user's secrets for their MCP servers (issue 25), sealed, bound to owner and name (0024).
user_secrets = Table(
    "user_secrets",
    metadata,
    Column("owner", String(128), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("sealed", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# A node's life at its provider, kept by the lifecycle loop (control_plane/dispatch/nodes.py;
# decisions in control_plane/providers/lifecycle.py) (0019; drain_started_at 0021).
node_machines = Table(
    "node_machines",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("provider", String(64), nullable=False),
    Column("size", String(64), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("provider_id", String(128), nullable=True),
    Column("requested_at", Float, nullable=False),
    Column("create_sent_at", Float, nullable=True),
    Column("delete_sent_at", Float, nullable=True),
    Column("ready_at", Float, nullable=True),
    Column("retry_not_before", Float, nullable=True),
    Column("drain_started_at", Float, nullable=True),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("version", Integer, nullable=False, server_default="0"),
)
