"""Token usage and cost summed from the `prompt.finished` events nodes already send: per
task (its workspace's sessions) and per user (their tasks). Nothing is asked of a node.

A node's numbers are untrusted: what is not a sound count or amount is left out of the sum,
with a log line naming the node (vm_agent.core.usage judges them), never an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from control_plane.storage.db import agent_sessions, node_events, tasks
from vm_agent.core import usage as u

log = logging.getLogger(__name__)


def summed(rows: Iterable[tuple[str, str, Any]]) -> u.Usage:
    """The sum over `prompt.finished` events' data (node, session, data), each prompt once.
    Pure apart from its log lines."""
    seen: set[tuple[str, str, str]] = set()
    parts: list[u.Usage] = []
    for node_id, session_id, data in rows:
        if not isinstance(data, dict) or "usage" not in data:
            continue
        key = (node_id, session_id, str(data.get("prompt_id")))
        if key in seen:  # the same prompt twice (a node sending it again) counts once
            continue
        seen.add(key)
        rejected: list[str] = []
        parts.append(u.parse(data["usage"], rejected))
        if rejected:
            log.warning(
                "node %s session %s: bad usage %s ignored",
                node_id[:64],
                session_id[:64],
                ", ".join(rejected[:8]),
            )
    return u.total(parts)


def _finished_of(conn: Connection, *where: Any) -> list[tuple[str, str, Any]]:
    found = conn.execute(
        select(agent_sessions.c.node_id, agent_sessions.c.session_id, node_events.c.data)
        .select_from(tasks)
        .join(agent_sessions, agent_sessions.c.workspace_id == tasks.c.workspace_id)
        .join(
            node_events,
            and_(
                node_events.c.node_id == agent_sessions.c.node_id,
                node_events.c.session_id == agent_sessions.c.session_id,
            ),
        )
        .where(node_events.c.type == "prompt.finished", *where)
        .order_by(node_events.c.id)
    )
    return [(str(n), str(s), d) for n, s, d in found]


def task_usage(conn: Connection, task_id: str) -> dict[str, Any]:
    """The task's usage (the task's key), as `GET /api/tasks/{id}` shows it."""
    return summed(_finished_of(conn, tasks.c.task_id == task_id)).to_camel()


def owner_usage(engine: Engine, owner: str) -> dict[str, Any]:
    """`owner`'s usage over all their tasks, and how many tasks they have."""
    with engine.connect() as conn:
        rows = _finished_of(conn, tasks.c.owner == owner)
        count = conn.execute(
            select(func.count()).select_from(tasks).where(tasks.c.owner == owner)
        ).scalar_one()
    return {"owner": owner, "tasks": count, "usage": summed(rows).to_camel()}
