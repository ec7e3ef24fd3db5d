"""Separate the storage key from the GitHub id so several users can link one installation.

Adds `external_installation_id`, backfills it from `installation_id` (legacy rows hold
the GitHub id there), indexes it, and makes (user_id, external id) unique.

Revision ID: 0002_github_external_id
Revises: 0001_legacy_github
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_github_external_id"
down_revision = "0001_legacy_github"
branch_labels = None
depends_on = None

_table = sa.table(
    "github_installations",
    sa.column("installation_id", sa.String),
    sa.column("external_installation_id", sa.String),
)


def upgrade() -> None:
    op.add_column(
        "github_installations",
        sa.Column("external_installation_id", sa.String(64), nullable=True),
    )
    op.execute(
        _table.update()
        .where(_table.c.external_installation_id.is_(None))
        .values(external_installation_id=_table.c.installation_id)
    )
    op.create_index(
        "ix_github_installations_external_installation_id",
        "github_installations",
        ["external_installation_id"],
    )
    op.create_index(
        "uq_github_installations_user_external",
        "github_installations",
        ["user_id", "external_installation_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_github_installations_user_external", "github_installations")
    op.drop_index("ix_github_installations_external_installation_id", "github_installations")
    with op.batch_alter_table("github_installations") as batch:
        batch.drop_column("external_installation_id")
