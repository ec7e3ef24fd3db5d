"""The node CA in the database, so that every replica signs with it and publishes it.

A CA that a control plane kept under `node-ca/` in its state directory is imported at its
next start (control_plane.identity.node_ca), then removed there.

Revision ID: 0008_node_ca
Revises: 0007_node_provisioning
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_node_ca"
down_revision = "0007_node_provisioning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_ca",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("key_pem", sa.Text, nullable=False),
        sa.Column("cert_pem", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_ca")
