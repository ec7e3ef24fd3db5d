"""A task's run in the database: its work, status, transitions, prompts and permission answers.

Every status change goes through `apply`: the row is read, the facts are run through the
pure `status.advance`, and the new status, outcome and timings are written with one
transition row per change, guarded by the row's version (a concurrent writer, another
replica or the API, makes it read and decide again). Synchronous SQLAlchemy Core.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from control_plane.dispatch import status as st
from control_plane.storage.db import (
    node_events,
    task_permission_answers,
    task_prompts,
    task_transitions,
    tasks,
    workspace_repositories,
)

PROMPT_MAX_BYTES = 256 * 1024  # a prompt's content blocks, as JSON
POLICIES = ("ask", "allow", "reject")
_APPLY_ATTEMPTS = 20

PENDING, SENT, FINISHED = "pending", "sent", "finished"
STATUS_AFTER_SUBMISSION = st.Status.WAITING_FOR_NODE.value  # placed in the same transaction


class PromptError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def prompt_blocks(prompt: Any) -> list[dict[str, Any]]:
    """Text, or a list of ACP content blocks, as content blocks: non-empty (422) and
    bounded (413)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptError(422, "prompt is empty")
        blocks: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    elif isinstance(prompt, list):
        if not prompt:
            raise PromptError(422, "prompt has no content blocks")
        for i, block in enumerate(prompt):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise PromptError(422, f"prompt[{i}] is not an ACP content block (no type)")
            if block["type"] == "text" and not str(block.get("text", "")).strip():
                raise PromptError(422, f"prompt[{i}] is an empty text block")
        blocks = prompt
    else:
        raise PromptError(422, "prompt must be text or a list of ACP content blocks")
    size = len(json.dumps(blocks))
    if size > PROMPT_MAX_BYTES:
        raise PromptError(413, f"prompt is {size} bytes, more than {PROMPT_MAX_BYTES}")
    return blocks


def new_prompt_id() -> str:
    return f"p-{uuid.uuid4().hex}"


def _transition(
    conn: Connection, task_id: str, before: str | None, after: str, *, now: float, cause: str
) -> None:
    conn.execute(
        insert(task_transitions).values(
            task_id=task_id, from_status=before, status=after, at=now, cause=cause
        )
    )


def add_prompt(
    conn: Connection, task_id: str, blocks: list[dict[str, Any]], now: float, prompt_id: str
) -> None:
    seq = conn.execute(
        select(func.coalesce(func.max(task_prompts.c.seq), 0)).where(
            task_prompts.c.task_id == task_id
        )
    ).scalar_one()
    conn.execute(
        insert(task_prompts).values(
            prompt_id=prompt_id,
            task_id=task_id,
            seq=int(seq) + 1,
            prompt_json=json.dumps(blocks),
            state=PENDING,
            created_at=now,
        )
    )


def begin(
    conn: Connection,
    task_id: str,
    *,
    node_id: str,
    blocks: list[dict[str, Any]],
    policy: str,
    follow_ups: bool,
    now: float,
) -> None:
    """The run of a task just stored (in the submission's transaction): queued, then placed."""
    placed = st.advance(st.TaskState(st.Status.QUEUED, follow_ups), st.Placed(node_id))
    conn.execute(
        update(tasks)
        .where(tasks.c.task_id == task_id)
        .values(
            prompt_json=json.dumps(blocks),
            permission_policy=policy,
            follow_ups=follow_ups,
            status=placed.state.status.value,
            submitted_at=now,
        )
    )
    _transition(conn, task_id, None, st.Status.QUEUED.value, now=now, cause="submitted")
    _transition(
        conn, task_id, st.Status.QUEUED.value, placed.state.status, now=now, cause=placed.cause
    )
    add_prompt(conn, task_id, blocks, now, new_prompt_id())


@dataclass(frozen=True)
class Applied:
    transitions: list[st.Transition]
    state: st.TaskState

    @property
    def refused(self) -> str | None:
        return next((t.refused for t in self.transitions if t.refused), None)


Then = Callable[[Connection, Applied], None]


def _state(conn: Connection, row: Any) -> st.TaskState:
    delivers = conn.execute(
        select(workspace_repositories.c.workspace_id).where(
            workspace_repositories.c.workspace_id == row.workspace_id
        )
    ).first()
    return st.TaskState(
        st.Status(row.status),
        bool(row.follow_ups),
        row.cancel_asked_at is not None,
        delivers is not None,
    )


def apply(
    engine: Engine,
    task_id: str,
    facts: Sequence[st.Fact],
    now: float,
    *,
    values: dict[str, Any] | None = None,
    then: Then | None = None,
) -> Applied | None:
    """Run `facts` through the task's status and record what changed (None: no such task).

    `values` are written with it (a cursor, a step's time); `then` runs in the same
    transaction when the write went through (rows that belong with the change)."""
    for _ in range(_APPLY_ATTEMPTS):
        with engine.begin() as conn:
            row = conn.execute(select(tasks).where(tasks.c.task_id == task_id)).first()
            if row is None:
                return None
            state = _state(conn, row)
            done = _finished_prompts(conn, task_id)
            out: dict[str, Any] = dict(values or {})
            results: list[st.Transition] = []
            rows: list[tuple[str, str, str]] = []
            for fact in facts:
                if isinstance(fact, st.PromptFinished):
                    if fact.prompt_id in done:
                        continue  # its outcome was recorded (over the connection, or before)
                    done.add(fact.prompt_id)
                t = st.advance(state, fact)
                results.append(t)
                if isinstance(fact, st.AgentUpdate) and row.first_update_at is None:
                    # whatever the status: the outbox may bring it after the outcome
                    out.setdefault("first_update_at", fact.at or now)
                if not t.changed:
                    continue
                rows.append((state.status.value, t.state.status.value, t.cause))
                if t.state.cancel_asked and not state.cancel_asked:
                    out["cancel_asked_at"] = now
                if isinstance(fact, st.NodeReady):
                    out["node_ready_at"] = now
                if t.outcome is not None:
                    out["outcome_json"] = json.dumps(t.outcome)
                    out["reason"] = t.outcome.get("reason")
                if t.state.status in st.ENDS:
                    out["ended_at"] = now
                state = t.state
            applied = Applied(results, state)
            prompt_facts = any(isinstance(f, st.PromptSent | st.PromptFinished) for f in facts)
            if not rows and not out and not prompt_facts:
                return applied
            out["status"] = state.status.value
            out["row_version"] = row.row_version + 1
            written = conn.execute(
                update(tasks)
                .where(tasks.c.task_id == task_id, tasks.c.row_version == row.row_version)
                .values(**out)
            ).rowcount
            if written != 1:
                continue  # someone else wrote first: read again, decide again
            for before, after, cause in rows:
                _transition(conn, task_id, before, after, now=now, cause=cause)
            _record_prompts(conn, facts, now)
            if then is not None:
                then(conn, applied)
            return applied
    raise RuntimeError(f"task {task_id}: could not record a change (too much contention)")


def _finished_prompts(conn: Connection, task_id: str) -> set[str]:
    found = conn.execute(
        select(task_prompts.c.prompt_id).where(
            task_prompts.c.task_id == task_id, task_prompts.c.state == FINISHED
        )
    ).scalars()
    return set(found)


def _record_prompts(conn: Connection, facts: Sequence[st.Fact], now: float) -> None:
    for fact in facts:
        if isinstance(fact, st.PromptSent):
            conn.execute(
                update(task_prompts)
                .where(task_prompts.c.prompt_id == fact.prompt_id, task_prompts.c.state == PENDING)
                .values(state=SENT, sent_at=now)
            )
        elif isinstance(fact, st.PromptFinished):
            conn.execute(
                update(task_prompts)
                .where(task_prompts.c.prompt_id == fact.prompt_id, task_prompts.c.state != FINISHED)
                .values(state=FINISHED, finished_at=now, outcome_json=json.dumps(fact.__dict__))
            )


def transitions(conn: Connection, task_id: str) -> list[dict[str, Any]]:
    found = conn.execute(
        select(task_transitions)
        .where(task_transitions.c.task_id == task_id)
        .order_by(task_transitions.c.id)
    ).mappings()
    return [dict(r) for r in found]


def prompts(conn: Connection, task_id: str) -> list[dict[str, Any]]:
    found = conn.execute(
        select(task_prompts).where(task_prompts.c.task_id == task_id).order_by(task_prompts.c.seq)
    ).mappings()
    return [dict(r) for r in found]


@dataclass(frozen=True)
class PermissionRequest:
    request_id: str
    tool_call: Any
    options: list[dict[str, Any]]
    resolved: bool


def permission_requests(
    conn: Connection, node_id: str, session_id: str
) -> dict[str, PermissionRequest]:
    """The session's permission requests from its node's events, each with whether it was
    resolved (every request gets exactly one `permission.resolved`: docs/outcomes.md)."""
    found = conn.execute(
        select(node_events.c.type, node_events.c.data)
        .where(
            node_events.c.node_id == node_id,
            node_events.c.session_id == session_id,
            node_events.c.type.in_(("permission.requested", "permission.resolved")),
        )
        .order_by(node_events.c.seq)
    )
    out: dict[str, PermissionRequest] = {}
    for kind, data in found:
        if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
            continue
        rid = data["request_id"]
        if kind == "permission.requested":
            request = data.get("request")
            request = request if isinstance(request, dict) else {}
            options = request.get("options")
            options = options if isinstance(options, list) else []
            out[rid] = PermissionRequest(rid, request.get("toolCall"), options, False)
        elif rid in out:
            r = out[rid]
            out[rid] = PermissionRequest(rid, r.tool_call, r.options, True)
    return out


def answers(conn: Connection, task_id: str) -> dict[str, dict[str, Any]]:
    found = conn.execute(
        select(task_permission_answers).where(task_permission_answers.c.task_id == task_id)
    ).mappings()
    return {r["request_id"]: dict(r) for r in found}


def record_answer(
    conn: Connection, task_id: str, request_id: str, option_id: str, *, by: str, now: float
) -> bool:
    """The answer to deliver; False if the request was answered already."""
    if conn.execute(
        select(task_permission_answers.c.request_id).where(
            task_permission_answers.c.task_id == task_id,
            task_permission_answers.c.request_id == request_id,
        )
    ).first():
        return False
    conn.execute(
        insert(task_permission_answers).values(
            task_id=task_id,
            request_id=request_id,
            option_id=option_id,
            answered_by=by,
            answered_at=now,
        )
    )
    return True
