"""A node that never reported ready: its tasks are placed again, once.

The node lifecycle deletes a node not ready within its deadline (or whose VM vanished
while booting) and calls `place_again` before it records the delete. Each task still
waiting for that node moves, with its workspace and its agent session, to one new node
asked for in its place (a `node_requests` row naming the node it `replaces`); when the
node that failed was itself such a replacement, the tasks fail instead, with the reason
("no node became ready: ..."). Idempotent: a task moved or failed is no longer on the node,
so a step taken again (another replica, after a crash) changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from control_plane.dispatch import runs
from control_plane.dispatch import status as st
from control_plane.dispatch.workspaces import ACTIVE
from control_plane.storage.db import agent_sessions, node_requests, tasks, workspaces
from control_plane.storage.machines import take_placement_lock

log = logging.getLogger("control_plane.nodes")

# Only tasks that never ran on the node move: a started one is the dispatcher's to end.
WAITING = (st.Status.QUEUED.value, st.Status.WAITING_FOR_NODE.value)


@dataclass(frozen=True, slots=True)
class Replaced:
    new_node_id: str | None  # the node asked for in its place (None: nothing moved)
    moved: list[str]  # task ids placed again
    failed: list[str]  # task ids that failed: their second node never became ready either


def place_again(engine: Engine, node_id: str, reason: str, now: float) -> Replaced:
    with engine.begin() as conn:
        take_placement_lock(conn)
        asked = conn.execute(
            select(node_requests).where(node_requests.c.node_id == node_id)
        ).mappings().first()  # fmt: skip
        waiting = conn.execute(
            select(workspaces.c.workspace_id, tasks.c.task_id)
            .join(tasks, tasks.c.workspace_id == workspaces.c.workspace_id)
            .where(workspaces.c.node_id == node_id, workspaces.c.state == ACTIVE)
            .where(tasks.c.status.in_(WAITING))
            .order_by(workspaces.c.created_at)
        ).all()
        if not waiting:
            return Replaced(None, [], [])
        if asked is None or asked["replaces"] is not None:
            failing = [str(task_id) for _, task_id in waiting]
            new_node_id = None
        else:
            new_node_id = f"node-{uuid.uuid4().hex[:16]}"
            ws_ids = [ws for ws, _ in waiting]
            conn.execute(
                insert(node_requests).values(
                    node_id=new_node_id,
                    provider=asked["provider"],
                    size=asked["size"],
                    state="pending",
                    workspace_id=ws_ids[0],
                    created_at=now,
                    replaces=node_id,
                )
            )
            conn.execute(
                update(workspaces)
                .where(workspaces.c.workspace_id.in_(ws_ids))
                .values(node_id=new_node_id)
            )
            conn.execute(
                update(agent_sessions)
                .where(agent_sessions.c.workspace_id.in_(ws_ids))
                .where(agent_sessions.c.node_id == node_id)
                .values(node_id=new_node_id)
            )
            failing = []
    # Each in its own transaction (runs.apply retries on contention); the dispatcher then
    # releases their workspaces as for any task that ended.
    for task_id in failing:
        runs.apply(engine, task_id, [st.NoNodeReady(f"node {node_id}: {reason}")], now)
    moved = [] if new_node_id is None else [str(task_id) for _, task_id in waiting]
    if moved:
        log.warning("node %s: %s; %d task(s) placed again on %s", node_id, reason, len(moved),
                    new_node_id)  # fmt: skip
    if failing:
        log.warning("node %s: %s; %d task(s) failed: no node became ready", node_id, reason,
                    len(failing))  # fmt: skip
    return Replaced(new_node_id, moved, failing)
