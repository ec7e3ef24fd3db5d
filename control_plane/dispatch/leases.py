"""Claiming due tasks with a lease in the database, so each step of a task is taken by one
replica at a time: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite an UPDATE
that takes a free lease only if the row's version is still the one read. A replica that
dies keeps its leases until they expire; then another takes them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, and_, or_, select, update

from control_plane.dispatch import status as st
from control_plane.dispatch import workspaces
from control_plane.storage.db import is_postgres, tasks
from control_plane.storage.db import workspaces as ws_table


def _due(now: float) -> Any:
    active = select(ws_table.c.workspace_id).where(ws_table.c.state == workspaces.ACTIVE)
    wanted = or_(
        tasks.c.status.not_in([s.value for s in st.ENDS]),
        and_(tasks.c.session_started_at.is_not(None), tasks.c.session_stopped_at.is_(None)),
        tasks.c.workspace_id.in_(active),  # an ended task's room, still to free
    )
    free = or_(tasks.c.lease_until.is_(None), tasks.c.lease_until < now)
    return and_(wanted, free)


def claim(engine: Engine, owner: str, now: float, lease_s: float, limit: int) -> list[str]:
    """Takes the lease of up to `limit` due tasks whose lease is free; their ids."""
    lease = {"lease_owner": owner, "lease_until": now + lease_s}
    with engine.begin() as conn:
        if is_postgres(engine):
            ids = list(
                conn.execute(
                    select(tasks.c.task_id)
                    .where(_due(now))
                    .order_by(tasks.c.lease_until.nulls_first())
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if ids:
                conn.execute(
                    update(tasks)
                    .where(tasks.c.task_id.in_(ids))
                    .values(**lease, row_version=tasks.c.row_version + 1)
                )
            return ids
        rows = conn.execute(
            select(tasks.c.task_id, tasks.c.row_version).where(_due(now)).limit(limit)
        ).all()
        taken = []
        for task_id, version in rows:
            won = conn.execute(
                update(tasks)
                .where(tasks.c.task_id == task_id, tasks.c.row_version == version, _due(now))
                .values(**lease, row_version=version + 1)
            ).rowcount
            if won == 1:
                taken.append(task_id)
        return taken


def release(engine: Engine, task_id: str, owner: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.task_id == task_id, tasks.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
