"""Proven GitHub installation links, and the repository each workspace may reach.

A link records how it was proven (`proof`: "github-user" through the App's OAuth flow,
"admin" by an admin's confirmation), by whom and when; links from before stay unproven
(NULL) and open no repository until proven. `workspace_repositories` holds, for a
workspace made for a repository, that repository and the link that grants it, and the
task's pull request once opened (branch, head commit, number, URL).

Revision ID: 0016_github_proof
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_github_proof"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("github_installations") as batch:
        batch.add_column(sa.Column("proof", sa.String(16), nullable=True))
        batch.add_column(sa.Column("proven_by", sa.String(255), nullable=True))
        batch.add_column(sa.Column("proven_at", sa.Float, nullable=True))
    op.create_table(
        "workspace_repositories",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("repository", sa.String(141), nullable=False),
        sa.Column("installation_id", sa.String(64), nullable=False),
        sa.Column("link_storage_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("base_branch", sa.String(255), nullable=True),
        sa.Column("head_commit", sa.String(64), nullable=True),
        sa.Column("pull_request_number", sa.Integer, nullable=True),
        sa.Column("pull_request_url", sa.String(1024), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("workspace_repositories")
    with op.batch_alter_table("github_installations") as batch:
        batch.drop_column("proven_at")
        batch.drop_column("proven_by")
        batch.drop_column("proof")
