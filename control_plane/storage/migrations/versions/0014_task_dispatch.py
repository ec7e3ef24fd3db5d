"""Tasks are dispatched and followed: the work (prompt, agent's permission policy,
follow-ups), the status with its outcome, reason and timings, the reconcile loop's lease;
every transition with its time and cause; the prompts of a task (ids made before they are
sent); the users' answers to permission requests; where the control plane reaches a node.

Tasks recorded before this revision had no prompt: they are marked `failed` with a reason,
so the dispatcher never picks them up.

Revision ID: 0014
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None

_BEFORE = "recorded before tasks were dispatched: it has no prompt"


def _task_columns() -> list[sa.Column[object]]:
    # New objects each time: a Column belongs to one table, and tests migrate many databases.
    return [
        sa.Column("prompt_json", sa.Text, nullable=True),
        sa.Column("permission_policy", sa.String(16), nullable=True),
        sa.Column("follow_ups", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(32), nullable=False, server_default="queued"),
        sa.Column("outcome_json", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("submitted_at", sa.Float, nullable=True),
        sa.Column("node_ready_at", sa.Float, nullable=True),
        sa.Column("first_update_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("session_started_at", sa.Float, nullable=True),
        sa.Column("session_stopped_at", sa.Float, nullable=True),
        sa.Column("cancel_asked_at", sa.Float, nullable=True),
        sa.Column("cancel_sent_at", sa.Float, nullable=True),
        sa.Column("events_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("row_version", sa.Integer, nullable=False, server_default="0"),
    ]


_tasks = sa.table(
    "tasks",
    sa.column("status", sa.String),
    sa.column("reason", sa.Text),
    sa.column("created_at", sa.Float),
    sa.column("ended_at", sa.Float),
)


def upgrade() -> None:
    for column in _task_columns():
        op.add_column("tasks", column)
    op.execute(
        _tasks.update().values(status="failed", reason=_BEFORE, ended_at=_tasks.c.created_at)
    )
    op.create_index("ix_tasks_status_lease", "tasks", ["status", "lease_until"])
    op.create_table(
        "task_transitions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
    )
    op.create_index("ix_task_transitions_task_id", "task_transitions", ["task_id"])
    op.create_table(
        "task_prompts",
        sa.Column("prompt_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("prompt_json", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome_json", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.UniqueConstraint("task_id", "seq", name="uq_task_prompts_task_seq"),
    )
    op.create_table(
        "task_permission_answers",
        sa.Column("task_id", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("option_id", sa.String(256), nullable=True),
        sa.Column("answered_by", sa.String(128), nullable=False),
        sa.Column("answered_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float, nullable=True),
    )
    op.create_table(
        "node_addresses",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("viewer_url", sa.String(512), nullable=False),
        sa.Column("workspace_root", sa.String(512), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_addresses")
    op.drop_table("task_permission_answers")
    op.drop_table("task_prompts")
    op.drop_index("ix_task_transitions_task_id", "task_transitions")
    op.drop_table("task_transitions")
    op.drop_index("ix_tasks_status_lease", "tasks")
    with op.batch_alter_table("tasks") as batch:
        for column in reversed(_task_columns()):
            batch.drop_column(column.name)
