"""Node provisioning: who made each node, its bootstrap token (hashed) and its certificate.

Revision ID: 0007_node_provisioning
Revises: 0006_workspaces_placement
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_node_provisioning"
down_revision = "0006_workspaces_placement"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_provisioning",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("hostname", sa.String(63), nullable=False),
        sa.Column("dns_name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("bootstrap_token_sha256", sa.String(64), nullable=False),
        sa.Column("bootstrap_expires_at", sa.Float, nullable=False),
        sa.Column("bootstrapped_at", sa.Float, nullable=True),
        sa.Column("cert_serial", sa.String(64), nullable=True),
        sa.Column("cert_sha256", sa.String(64), nullable=True),
        sa.Column("cert_not_after", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("node_provisioning")
