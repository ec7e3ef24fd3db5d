"""node_machines: a node's life at its provider (the lifecycle loop's record).

One row per node placement asked for, made before any VM is (ownership before creation):
its phase, the provider's id for the VM once known, when a create or delete was sent, a
provider's backoff, and the lease of the replica taking its next step.

Revision ID: 0019
Revises: 0017_provider_credentials
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0017_provider_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_machines",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("size", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("provider_id", sa.String(128), nullable=True),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("create_sent_at", sa.Float, nullable=True),
        sa.Column("delete_sent_at", sa.Float, nullable=True),
        sa.Column("ready_at", sa.Float, nullable=True),
        sa.Column("retry_not_before", sa.Float, nullable=True),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("node_machines_phase", "node_machines", ["phase"])


def downgrade() -> None:
    op.drop_index("node_machines_phase", "node_machines")
    op.drop_table("node_machines")
