"""Agent settings (issue 25): a layer's `agentSettings` beside its requirements, and a
task's resolved settings.

`layer_defaults.agent_settings_json`: the layer's settings as stored (NULL: none, as every
row from before). `tasks.agent_settings_json`: the resolved values `session/start`
carries; `tasks.agent_settings_provenance_json`: what answers show (each field's value and
provenance, MCP servers' env and header names without values). Both NULL for tasks from
before, which ran with none. `task_setting_changes`: a mode or model change the owner
asked for while the task runs, until the dispatcher relayed it (`sent_at`, `error`).

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
    op.create_table(
        "task_setting_changes",
        sa.Column("change_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("field", sa.String(16), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("asked_by", sa.String(128), nullable=False),
        sa.Column("asked_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_task_setting_changes_task", "task_setting_changes", ["task_id", "asked_at"])


def downgrade() -> None:
    op.drop_index("ix_task_setting_changes_task", table_name="task_setting_changes")
    op.drop_table("task_setting_changes")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("agent_settings_provenance_json")
        batch.drop_column("agent_settings_json")
    with op.batch_alter_table("layer_defaults") as batch:
        batch.drop_column("agent_settings_json")
