"""Provider credentials per user, sealed (never plaintext at rest).

Revision ID: 0017_provider_credentials
Revises: 0016_github_proof
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_provider_credentials"
down_revision = "0016_github_proof"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_credentials",
        sa.Column("owner_kind", sa.String(16), primary_key=True),
        sa.Column("owner_id", sa.String(128), primary_key=True),
        sa.Column("provider", sa.String(64), primary_key=True),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("provider_credentials")
