"""What each node's stored events take (`node_event_bytes`), for the per-node bound.

Its own table, not a column of `nodes`: a node that posts events before its `ready` must
not become a node placement and sessions know of. The count is the size of each stored
event's data (as JSON text), type and session id; existing events are counted here once,
later ones in the transaction that stores them (node_store).

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
    op.create_table(
        "node_event_bytes",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("event_bytes", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO node_event_bytes (node_id, event_bytes)"
        " SELECT node_id,"
        " SUM(LENGTH(CAST(data AS TEXT)) + LENGTH(type) + LENGTH(session_id))"
        " FROM node_events GROUP BY node_id"
    )


def downgrade() -> None:
    op.drop_table("node_event_bytes")
