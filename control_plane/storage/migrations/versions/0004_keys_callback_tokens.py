"""Signing keys in the database (shared by every replica) and the callback token ledger.

Keys a control plane kept in `signing-keys.json` under its state directory are imported
at its next start (control_plane.identity.keys), which notes the time in `control_plane_meta` as
`callback_ledger_since`: callback tokens those keys signed before then have no ledger row
(see control_plane.identity.tokens.check_callback).

Revision ID: 0004_keys_callback_tokens
Revises: 0003_nodes_events_tasks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_keys_callback_tokens"
down_revision = "0003_nodes_events_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("private_key_pem", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("not_before", sa.Float, nullable=False),
    )
    op.create_table(
        "callback_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("replaces", sa.String(64), nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_index("ix_callback_tokens_node_id", "callback_tokens", ["node_id"])
    op.create_table(
        "control_plane_meta",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("control_plane_meta")
    op.drop_index("ix_callback_tokens_node_id", "callback_tokens")
    op.drop_table("callback_tokens")
    op.drop_table("signing_keys")
