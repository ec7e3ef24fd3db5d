"""node_machines.drain_started_at: when the lifecycle decided to drain a node;
node_requests.replaces: the node (never ready) whose tasks a request takes.

A DRAINING node is deleted once its daemon reports drained, or when its drain deadline
(counted from here) passes, or when it is lost. A node that never reported ready has its
tasks placed again once: on a node asked for with `replaces` set; when that one never
reports either, the tasks fail.

Revision ID: 0021
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("node_machines") as batch:
        batch.add_column(sa.Column("drain_started_at", sa.Float, nullable=True))
    with op.batch_alter_table("node_requests") as batch:
        batch.add_column(sa.Column("replaces", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("node_requests") as batch:
        batch.drop_column("replaces")
    with op.batch_alter_table("node_machines") as batch:
        batch.drop_column("drain_started_at")
