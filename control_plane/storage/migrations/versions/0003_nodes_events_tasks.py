"""Nodes, their events (exactly once by node, session, seq), session bindings, tasks.

Revision ID: 0003_nodes_events_tasks
Revises: 0002_github_external_id
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_nodes_events_tasks"
down_revision = "0002_github_external_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("capacity", sa.JSON, nullable=True),
        sa.Column("ready_at", sa.Float, nullable=True),
        sa.Column("last_heartbeat_at", sa.Float, nullable=True),
        sa.Column("sessions", sa.JSON, nullable=True),
        sa.Column("usage", sa.JSON, nullable=True),
    )
    op.create_table(
        "node_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON, nullable=True),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.UniqueConstraint("node_id", "session_id", "seq", name="uq_node_events_node_session_seq"),
    )
    op.create_table(
        "session_bindings",
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("bound_at", sa.Float, nullable=False),
    )
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(128), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("requested_vm_size", sa.String(64), nullable=True),
        sa.Column("vm_size_source", sa.String(64), nullable=True),
        sa.Column("requirements_json", sa.Text, nullable=False),
        sa.Column("reservation_json", sa.Text, nullable=False),
        sa.Column("reservation_provenance_json", sa.Text, nullable=False),
        sa.Column("placement_explanation", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("session_bindings")
    op.drop_table("node_events")
    op.drop_table("nodes")
