"""A task's repository and its delivery: what the task asked for, and what came back.

`workspace_repositories` (0016) holds a workspace's repository grant; a task submitted
with a repository now records there, at submission, its task branch (`branch`), the base
branch it asked for (`base_branch`, NULL: the remote's default) and whether it wants a
pull request. At the task's end the dispatcher records the node's push: `pushed` (NULL
until the push is recorded), when, the head commit and the base the node pushed against,
and why nothing was pushed (`push_reason`).

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workspace_repositories") as batch:
        batch.add_column(
            sa.Column("pull_request_wanted", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("pushed", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("pushed_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("push_reason", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workspace_repositories") as batch:
        batch.drop_column("push_reason")
        batch.drop_column("pushed_at")
        batch.drop_column("pushed")
        batch.drop_column("pull_request_wanted")
