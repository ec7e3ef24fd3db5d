"""Workspaces (where a task runs, with its audit), node requests, agent sessions, placement.

Tasks gain their owner, agent and workspace; their placement explanation becomes JSON
(`placement_explanation_json`): rows from before placement existed get a document that
says so instead of an empty string. `session_bindings` (the first node to ask for a
session's credentials got them) is replaced by `agent_sessions`, which the control plane
makes itself.

Revision ID: 0006_workspaces_placement
Revises: 0005_layer_defaults
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006_workspaces_placement"
down_revision = "0005_layer_defaults"
branch_labels = None
depends_on = None

BEFORE_PLACEMENT = json.dumps(
    {
        "version": 1,
        "decision": {"kind": "none"},
        "summary": "recorded before placement existed: the task was never placed",
        "candidates": [],
    }
)

_tasks = sa.table(
    "tasks",
    sa.column("placement_explanation", sa.Text),
    sa.column("placement_explanation_json", sa.Text),
)


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(128), nullable=False, unique=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("requested_vm_size", sa.String(64), nullable=False),
        sa.Column("vm_size_source", sa.String(64), nullable=False),
        sa.Column("requirements_json", sa.Text, nullable=False),
        sa.Column("reservation_json", sa.Text, nullable=False),
        sa.Column("reservation_provenance_json", sa.Text, nullable=False),
        sa.Column("placement_explanation_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("released_at", sa.Float, nullable=True),
    )
    op.create_index("ix_workspaces_node_state", "workspaces", ["node_id", "state"])
    op.create_table(
        "node_requests",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("size", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "agent_sessions",
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
    )
    op.create_index("ix_agent_sessions_workspace_id", "agent_sessions", ["workspace_id"])
    lock = op.create_table(
        "placement_lock",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("placements", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(lock, [{"id": 1, "placements": 0}])

    op.add_column("tasks", sa.Column("owner", sa.String(128), nullable=True))
    op.add_column("tasks", sa.Column("agent", sa.String(128), nullable=True))
    op.add_column("tasks", sa.Column("workspace_id", sa.String(64), nullable=True))
    op.add_column("tasks", sa.Column("placement_explanation_json", sa.Text, nullable=True))
    op.execute(_tasks.update().values(placement_explanation_json=BEFORE_PLACEMENT))
    with op.batch_alter_table("tasks") as batch:
        batch.alter_column("placement_explanation_json", existing_type=sa.Text, nullable=False)
        batch.drop_column("placement_explanation")
    op.drop_table("session_bindings")


def downgrade() -> None:
    op.create_table(
        "session_bindings",
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("bound_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("placement_explanation", sa.Text, nullable=False, server_default="")
        )
    op.execute(_tasks.update().values(placement_explanation=_tasks.c.placement_explanation_json))
    with op.batch_alter_table("tasks") as batch:
        for name in ("placement_explanation_json", "workspace_id", "agent", "owner"):
            batch.drop_column(name)
    op.drop_table("placement_lock")
    op.drop_index("ix_agent_sessions_workspace_id", "agent_sessions")
    op.drop_table("agent_sessions")
    op.drop_table("node_requests")
    op.drop_index("ix_workspaces_node_state", "workspaces")
    op.drop_table("workspaces")
