"""Stored defaults of each layer (project, user, agent profile, trigger, platform), versioned.

The platform layer is seeded with the defaults the resolver had built in, as version 1
of the layer `platform/platform`.

Revision ID: 0005_layer_defaults
Revises: 0004_keys_callback_tokens
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from alembic import op

revision = "0005_layer_defaults"
down_revision = "0004_keys_callback_tokens"
branch_labels = None
depends_on = None

# Frozen here: later changes to the platform defaults are new versions, not this seed.
PLATFORM_SEED = {
    "minVcpu": 2.0,
    "minMemoryGb": 4.0,
    "minDiskGb": 40.0,
    "exclusiveNode": False,
    "maxCoTenants": 4,
}


def upgrade() -> None:
    table = op.create_table(
        "layer_defaults",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("layer_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("requirements_json", sa.Text, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.bulk_insert(
        table,
        [
            {
                "kind": "platform",
                "layer_id": "platform",
                "version": 1,
                "requirements_json": json.dumps(PLATFORM_SEED),
                "owner": "platform",
                "updated_by": "migration 0005",
                "updated_at": time.time(),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("layer_defaults")
