"""Tenancy: names scoped per owner, layers shared by an admin's list, what quotas count.

- `layer_defaults` is keyed by (kind, owner, layer_id, version): alice's project `p` and
  bob's are two layers. A user's own layer is owned by that user (rows an admin wrote
  first said "admin"); the platform layer keeps its owner.
- `layer_shares`: the users an admin shared a project, agent profile or trigger with.
- `tasks.client_task_id` is the owner's own `taskId`, unique by (owner, client_task_id);
  `tasks.task_id` stays the key (unique overall, what the dispatcher's tables use), made
  by the control plane from now on. `workspaces` record the owner's `taskId`, unique by
  (owner, task_id). So bob's "t1" never collides with (or reveals) alice's. Rows from
  before 0006 have no owner: they get "" (no user's; admins see them); the rows kept keep
  their key and take it as their `taskId`.
- `workspaces` record the project a task named (`project_owner`, `project_id`), for the
  project quotas; indexes for counting what a user holds.

The tables whose key changes are copied into a new table and renamed, the same on SQLite
and PostgreSQL (no dialect-specific constraint names to drop).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_AUDIT = [
    ("provider", 64),
    ("requested_vm_size", 64),
    ("vm_size_source", 64),
]
_AUDIT_TEXT = [
    "requirements_json",
    "reservation_json",
    "reservation_provenance_json",
    "placement_explanation_json",
]


def _layer_columns(owner_in_key: bool = True) -> list[sa.Column[object]]:
    return [
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), primary_key=owner_in_key, nullable=False),
        sa.Column("layer_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("requirements_json", sa.Text, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    ]


def _task_columns(scoped: bool) -> list[sa.Column[object]]:
    client = [sa.Column("client_task_id", sa.String(128), nullable=False)] if scoped else []
    return [
        sa.Column("task_id", sa.String(128), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=not scoped),
        *client,
        sa.Column("agent", sa.String(128), nullable=True),
        sa.Column("workspace_id", sa.String(64), nullable=True),
        *[sa.Column(name, sa.String(n), nullable=True) for name, n in _AUDIT],
        *[sa.Column(name, sa.Text, nullable=False) for name in _AUDIT_TEXT],
        sa.Column("created_at", sa.Float, nullable=False),
    ]


def _workspace_columns(scoped: bool) -> list[sa.Column[object]]:
    extra = (
        [
            sa.Column("project_owner", sa.String(128), nullable=True),
            sa.Column("project_id", sa.String(128), nullable=True),
        ]
        if scoped
        else []
    )
    return [
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(128), nullable=False, unique=not scoped),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        *[sa.Column(name, sa.String(n), nullable=False) for name, n in _AUDIT],
        *[sa.Column(name, sa.Text, nullable=False) for name in _AUDIT_TEXT],
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("released_at", sa.Float, nullable=True),
        *extra,
    ]


def _replace(name: str, columns: list[sa.Column[object]], *constraints: sa.Constraint) -> None:
    """Copy `name` into a table of `columns` (the columns both have), then take its name."""
    new = f"{name}_0010"
    op.create_table(new, *columns, *constraints)
    old_cols = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(name)}
    shared = [c.name for c in columns if c.name in old_cols]
    source = sa.table(name, *(sa.column(c) for c in shared))
    target = sa.table(new, *(sa.column(c) for c in shared))
    op.execute(sa.insert(target).from_select(shared, sa.select(*source.c)))
    op.drop_table(name)
    op.rename_table(new, name)


def upgrade() -> None:
    op.execute("UPDATE layer_defaults SET owner = layer_id WHERE kind = 'user'")
    _replace("layer_defaults", _layer_columns())
    op.create_table(
        "layer_shares",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("layer_id", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("granted_by", sa.String(128), nullable=False),
        sa.Column("granted_at", sa.Float, nullable=False),
    )
    op.execute("UPDATE tasks SET owner = '' WHERE owner IS NULL")
    op.add_column("tasks", sa.Column("client_task_id", sa.String(128), nullable=True))
    op.execute("UPDATE tasks SET client_task_id = task_id")
    _replace(
        "tasks",
        _task_columns(scoped=True),
        sa.UniqueConstraint("owner", "client_task_id", name="uq_tasks_owner_client_task"),
    )
    op.drop_index("ix_workspaces_node_state", "workspaces")
    _replace(
        "workspaces",
        _workspace_columns(scoped=True),
        sa.UniqueConstraint("owner", "task_id", name="uq_workspaces_owner_task"),
    )
    op.create_index("ix_workspaces_node_state", "workspaces", ["node_id", "state"])
    op.create_index("ix_workspaces_owner_state", "workspaces", ["owner", "state"])
    op.create_index("ix_workspaces_project", "workspaces", ["project_owner", "project_id"])
    op.create_index("ix_agent_sessions_owner", "agent_sessions", ["owner", "ended_at"])


def downgrade() -> None:
    # Going back makes names global again: it fails if two owners share a name.
    op.drop_index("ix_agent_sessions_owner", "agent_sessions")
    op.drop_index("ix_workspaces_project", "workspaces")
    op.drop_index("ix_workspaces_owner_state", "workspaces")
    op.drop_index("ix_workspaces_node_state", "workspaces")
    _replace("workspaces", _workspace_columns(scoped=False))
    op.create_index("ix_workspaces_node_state", "workspaces", ["node_id", "state"])
    _replace("tasks", _task_columns(scoped=False))  # a task's id is its key again
    op.execute("UPDATE tasks SET owner = NULL WHERE owner = ''")
    op.drop_table("layer_shares")
    _replace("layer_defaults", _layer_columns(owner_in_key=False))
