"""The key of each node's certificate on record, so a renewal is signed for that key only.

Rows bootstrapped before this revision have no key on record: their next renewal records
the key it is for (control_plane/identity/node_certs.py says why that is accepted once).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("node_provisioning") as batch:
        batch.add_column(sa.Column("cert_public_key_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("node_provisioning") as batch:
        batch.drop_column("cert_public_key_sha256")
