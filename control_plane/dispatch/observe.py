"""What one dispatch pass reads of a task, in one go: its row, its node (reports and
address), the session's new events as facts, its prompts, the permission answers to
deliver, its repository and agent settings (for `session/start`) and the delivery at its
end. Read only; the pass records and acts on it (loop.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from control_plane.dispatch import addresses, reconcile, runs, setting_changes
from control_plane.dispatch import status as st
from control_plane.dispatch.views import placement_of
from control_plane.dispatch.workspaces import ACTIVE
from control_plane.github import access
from control_plane.github.delivery import GitIdentity, repository_params
from control_plane.storage.db import node_events, node_requests, nodes, tasks, workspaces

EVENTS_PER_PASS = 500


@dataclass(frozen=True)
class NodeTarget:
    node_id: str
    viewer_url: str
    tls_name: str | None


@dataclass(frozen=True)
class Snapshot:
    node_id: str
    session_id: str
    workspace_id: str
    target: NodeTarget | None
    observed: reconcile.Observed
    facts: list[st.Fact] = field(default_factory=list)
    new_seq: int | None = None  # the events cursor after `facts` (None: no new events)
    start_params: dict[str, Any] = field(default_factory=dict)
    prompt_blocks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    delivery: access.Delivery | None = None  # the task's repository, if it has one


def observe(
    engine: Any,
    task_id: str,
    now: float,
    in_flight: frozenset[str],
    domain: str,
    *,
    git: GitIdentity | None = None,
) -> Snapshot | None:
    with engine.connect() as conn:
        row = conn.execute(select(tasks).where(tasks.c.task_id == task_id)).mappings().first()
        if row is None:
            return None
        node_id, session_id = placement_of(conn, row["workspace_id"])
        if node_id is None or session_id is None:
            return None
        address = addresses.address_of(conn, node_id, domain)
        node = conn.execute(
            select(nodes.c.ready_at, nodes.c.last_heartbeat_at).where(nodes.c.node_id == node_id)
        ).first()
        asked_at = conn.execute(
            select(node_requests.c.created_at).where(node_requests.c.node_id == node_id)
        ).scalar_one_or_none()
        of_session = (node_events.c.node_id == node_id, node_events.c.session_id == session_id)
        new = conn.execute(
            select(node_events.c.seq, node_events.c.type, node_events.c.ts, node_events.c.data)
            .where(*of_session, node_events.c.seq > row["events_seq"])
            .order_by(node_events.c.seq)
            .limit(EVENTS_PER_PASS)
        ).all()
        seen = {
            d.get("prompt_id")
            for (d,) in conn.execute(
                select(node_events.c.data).where(
                    *of_session, node_events.c.type.in_(("prompt.started", "prompt.finished"))
                )
            )
            if isinstance(d, dict)
        }
        ws_state = conn.execute(
            select(workspaces.c.state).where(workspaces.c.workspace_id == row["workspace_id"])
        ).scalar_one_or_none()
        prompts = runs.prompts(conn, task_id)
        requests = runs.permission_requests(conn, node_id, session_id)
        given = runs.answers(conn, task_id)
        delivery = access.delivery_of(conn, row["workspace_id"])
        changes = setting_changes.pending(conn, task_id)
    answers: list[tuple[str, str]] = []
    for r in requests.values():
        if r.resolved:
            continue
        answer = given.get(r.request_id)
        if answer is not None:
            if answer["sent_at"] is None and answer["option_id"] is not None:
                answers.append((r.request_id, answer["option_id"]))
            continue
        picked = reconcile.policy_option(row["permission_policy"] or "ask", r.options)
        if picked is not None:
            answers.append((r.request_id, picked))
    heard = [t for t in (node.ready_at, node.last_heartbeat_at) if t is not None] if node else []
    observed = reconcile.Observed(
        status=st.Status(row["status"]),
        now=now,
        submitted_at=row["submitted_at"] or row["created_at"],
        node_asked_at=asked_at,
        cancel_asked=row["cancel_asked_at"] is not None,
        cancel_sent=row["cancel_sent_at"] is not None,
        session_started=row["session_started_at"] is not None,
        session_stopped=row["session_stopped_at"] is not None,
        node_ready=node is not None and node.ready_at is not None and address is not None,
        last_heard=max(heard) if heard else None,
        prompts=tuple(
            reconcile.PromptView(p["prompt_id"], p["state"], p["sent_at"], p["prompt_id"] in seen)
            for p in prompts
        ),
        answers=tuple(answers),
        in_flight=in_flight,
        workspace_active=ws_state == ACTIVE,
        changes=changes,
        delivery=None
        if delivery is None
        else reconcile.DeliveryView(
            delivery.pushed, delivery.pull_request_wanted, delivery.pull_request_url is not None
        ),
    )
    target = None
    start: dict[str, Any] = {}
    if address is not None:
        target = NodeTarget(node_id, address.viewer_url, address.tls_name)
        start = {
            "agent": row["agent"],
            "cwd": f"{address.workspace_root.rstrip('/')}/{row['workspace_id']}",
            "session_id": session_id,
            "owner": row["owner"],
            "reservation": json.loads(row["reservation_json"]),
        }
        if row["agent_settings_json"]:  # the resolved values only; none set: no field
            start["agentSettings"] = json.loads(row["agent_settings_json"])
        if delivery is not None:
            if git is None:
                raise RuntimeError(f"task {task_id} has a repository and the dispatcher no git")
            start["repository"] = repository_params(git, row["workspace_id"], delivery)
    return Snapshot(
        node_id=node_id,
        session_id=session_id,
        workspace_id=row["workspace_id"],
        target=target,
        observed=observed,
        facts=reconcile.facts_of((t, ts, d) for _, t, ts, d in new),
        new_seq=new[-1][0] if new else None,
        start_params=start,
        prompt_blocks={p["prompt_id"]: json.loads(p["prompt_json"]) for p in prompts},
        delivery=delivery,
    )
