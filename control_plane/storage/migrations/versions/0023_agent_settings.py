"""Agent settings (issue 25): a layer's `agentSettings` beside its requirements, and a
task's resolved settings.

`layer_defaults.agent_settings_json`: the layer's settings as stored (NULL: none, as every
row from before). `tasks.agent_settings_json`: the resolved values `session/start`
carries; `tasks.agent_settings_provenance_json`: what answers show (each field's value and
provenance, MCP servers' env and header names without values). Both NULL for tasks from
before, which ran with none.

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("layer_defaults") as batch:
        batch.add_column(sa.Column("agent_settings_json", sa.Text, nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("agent_settings_json", sa.Text, nullable=True))
        batch.add_column(sa.Column("agent_settings_provenance_json", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("agent_settings_provenance_json")
        batch.drop_column("agent_settings_json")
    with op.batch_alter_table("layer_defaults") as batch:
        batch.drop_column("agent_settings_json")
