"""What each node's stored events take (`nodes.event_bytes`), for the per-node bound.

The count is the size of each stored event's data (as JSON text), type and session id;
existing events are counted here once, later ones as they are stored (node_store).

Revision ID: 0009
Revises: 0008_node_ca
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008_node_ca"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("event_bytes", sa.BigInteger, nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE nodes SET event_bytes = COALESCE(("
        " SELECT SUM(LENGTH(CAST(e.data AS TEXT)) + LENGTH(e.type) + LENGTH(e.session_id))"
        " FROM node_events e WHERE e.node_id = nodes.node_id), 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("event_bytes")
