"""What a user reads of a task's run: its record (status, outcome, timings, pending
permission requests, transitions) and its session's events as its node sent them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from control_plane.dispatch import runs, usage
from control_plane.dispatch import status as st
from control_plane.github import access
from control_plane.storage.db import (
    agent_sessions,
    node_events,
    task_setting_changes,
    tasks,
    workspaces,
)

EVENTS_PAGE_MAX = 1000


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def placement_of(conn: Connection, workspace_id: str | None) -> tuple[str | None, str | None]:
    """The node and (first) session of a task's workspace."""
    if workspace_id is None:
        return None, None
    node_id = conn.execute(
        select(workspaces.c.node_id).where(workspaces.c.workspace_id == workspace_id)
    ).scalar_one_or_none()
    session_id = conn.execute(
        select(agent_sessions.c.session_id)
        .where(agent_sessions.c.workspace_id == workspace_id)
        .order_by(agent_sessions.c.created_at)
        .limit(1)
    ).scalar_one_or_none()
    return node_id, session_id


def owned_task_view(engine: Engine, owner: str, task_id: str) -> tuple[str, dict[str, Any]] | None:
    """`owner`'s task `task_id` (the owner's `taskId`): its key and its view, if any."""
    with engine.connect() as conn:
        key = conn.execute(
            select(tasks.c.task_id).where(tasks.c.owner == owner, tasks.c.client_task_id == task_id)
        ).scalar_one_or_none()
    view = None if key is None else task_view(engine, key)
    return None if key is None or view is None else (key, view)


def task_view(engine: Engine, task_id: str) -> dict[str, Any] | None:
    """The run of the task keyed `task_id` as `GET /api/tasks/{id}` shows it (`taskId`:
    the owner's own id), with `owner` (for the access check)."""
    with engine.connect() as conn:
        row = conn.execute(select(tasks).where(tasks.c.task_id == task_id)).mappings().first()
        if row is None:
            return None
        node_id, session_id = placement_of(conn, row["workspace_id"])
        pending: list[dict[str, Any]] = []
        if node_id is not None and session_id is not None and not st.is_end(row["status"]):
            answered = runs.answers(conn, task_id)
            requests = runs.permission_requests(conn, node_id, session_id)
            pending = [
                {"requestId": r.request_id, "toolCall": r.tool_call, "options": r.options}
                for r in requests.values()
                if not r.resolved and r.request_id not in answered
            ]
        history = runs.transitions(conn, task_id)
        spent = usage.task_usage(conn, task_id)
        delivery = access.delivery_of(conn, row["workspace_id"])
        changes = setting_changes(conn, task_id)
        first_update = row["first_update_at"]
        if first_update is None and node_id is not None and session_id is not None:
            # The dispatcher records it as it reads the events; one that came through the
            # outbox after the task ended (its outcome came first, over the connection) is
            # read here.
            first_update = conn.execute(
                select(func.min(node_events.c.ts)).where(
                    node_events.c.node_id == node_id,
                    node_events.c.session_id == session_id,
                    node_events.c.type == "acp.update",
                )
            ).scalar_one_or_none()
    return {
        "taskId": row["client_task_id"],
        "owner": row["owner"],
        "status": row["status"],
        "outcome": None if row["outcome_json"] is None else json.loads(row["outcome_json"]),
        "reason": row["reason"],
        "nodeId": node_id,
        "sessionId": session_id,
        "agent": row["agent"],
        "workspaceId": row["workspace_id"],
        "permissionPolicy": row["permission_policy"],
        "followUps": bool(row["follow_ups"]),
        "timings": {
            "submittedAt": iso(row["submitted_at"]),
            "nodeReadyAt": iso(row["node_ready_at"]),
            "firstUpdateAt": iso(first_update),
            "endedAt": iso(row["ended_at"]),
        },
        **repository_view(delivery),
        "pendingPermissions": pending,
        "usage": spent,
        "settingChanges": changes,
        "transitions": [
            {"status": t["status"], "at": iso(t["at"]), "cause": t["cause"]} for t in history
        ],
    }


def setting_changes(conn: Connection, task_id: str) -> list[dict[str, Any]]:
    """The mode/model changes asked of a running task, and whether each was relayed."""
    c = task_setting_changes.c
    query = select(task_setting_changes).where(c.task_id == task_id).order_by(c.asked_at)
    return [
        {
            "changeId": r["change_id"],
            "field": r["field"],
            "value": r["value"],
            "askedAt": iso(r["asked_at"]),
            "sentAt": iso(r["sent_at"]),
            "error": r["error"],
        }
        for r in conn.execute(query).mappings()
    ]


def repository_view(d: access.Delivery | None) -> dict[str, Any]:
    """A task's repository and what came back of it (all null for a task without one)."""
    return {
        "repository": None if d is None else d.repository,
        "branch": None if d is None else d.branch,
        "baseBranch": None if d is None else d.base_branch,
        "pullRequest": d is not None and d.pull_request_wanted,
        "headCommit": None if d is None else d.head_commit,
        "pushed": None if d is None else d.pushed,
        "pushReason": None if d is None else d.push_reason,
        "pullRequestUrl": None if d is None else d.pull_request_url,
    }


def session_events(
    engine: Engine, node_id: str, session_id: str, after: int, limit: int
) -> list[dict[str, Any]]:
    """The session's events after `after`, in seq order, at most `limit`."""
    with engine.connect() as conn:
        found = conn.execute(
            select(node_events.c.seq, node_events.c.type, node_events.c.ts, node_events.c.data)
            .where(
                node_events.c.node_id == node_id,
                node_events.c.session_id == session_id,
                node_events.c.seq > after,
            )
            .order_by(node_events.c.seq)
            .limit(min(limit, EVENTS_PAGE_MAX))
        )
        return [{"seq": s, "type": t, "ts": ts, "data": d} for s, t, ts, d in found]


def finished_seq(engine: Engine, node_id: str, session_id: str, prompt_id: str) -> int | None:
    """The seq of the `prompt.finished` event of `prompt_id`, once the node sent it."""
    with engine.connect() as conn:
        found = conn.execute(
            select(node_events.c.seq, node_events.c.data).where(
                node_events.c.node_id == node_id,
                node_events.c.session_id == session_id,
                node_events.c.type == "prompt.finished",
            )
        )
        for seq, data in found:
            if isinstance(data, dict) and data.get("prompt_id") == prompt_id:
                return int(seq)
    return None
