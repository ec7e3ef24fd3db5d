"""What a user asks of a running task: cancel, close, a follow-up prompt, a permission
answer. Each is recorded here; the dispatcher carries it to the node on its next pass."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from control_plane.dispatch import runs
from control_plane.dispatch import status as st
from control_plane.dispatch.views import placement_of
from control_plane.storage.db import tasks


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _applied(engine: Engine, task_id: str, fact: st.Fact, now: float, **kw: Any) -> runs.Applied:
    applied = runs.apply(engine, task_id, [fact], now, **kw)
    if applied is None:
        raise Refused(404, "no such task")
    if applied.refused is not None:
        raise Refused(409, applied.refused)
    return applied


def cancel(engine: Engine, task_id: str, now: float) -> str:
    return _applied(engine, task_id, st.CancelAsked(), now).state.status.value


def close(engine: Engine, task_id: str, now: float) -> str:
    return _applied(engine, task_id, st.CloseAsked(), now).state.status.value


def follow_up(engine: Engine, task_id: str, blocks: list[dict[str, Any]], now: float) -> str:
    prompt_id = runs.new_prompt_id()

    def add(conn: Connection, _applied: runs.Applied) -> None:
        runs.add_prompt(conn, task_id, blocks, now, prompt_id)

    _applied(engine, task_id, st.FollowUpAsked(prompt_id), now, then=add)
    return prompt_id


def answer_permission(
    engine: Engine, task_id: str, request_id: str, option_id: str, *, user: str, now: float
) -> None:
    """Records a user's answer (Refused: 404 unknown request, 409 not pending, 422 no such
    option); the dispatcher sends it to the node."""
    with engine.begin() as conn:
        row = conn.execute(
            select(tasks.c.status, tasks.c.workspace_id).where(tasks.c.task_id == task_id)
        ).first()
        if row is None:
            raise Refused(404, "no such task")
        node_id, session_id = placement_of(conn, row.workspace_id)
        requests = (
            runs.permission_requests(conn, node_id, session_id)
            if node_id is not None and session_id is not None
            else {}
        )
        request = requests.get(request_id)
        if request is None:
            raise Refused(404, f"no permission request {request_id!r} in this task")
        if request.resolved or st.is_end(row.status):
            raise Refused(409, f"permission request {request_id!r} is not pending")
        known = [o.get("optionId") for o in request.options if isinstance(o, dict)]
        if option_id not in known:
            raise Refused(422, f"optionId must be one of {known}")
        try:
            fresh = runs.record_answer(conn, task_id, request_id, option_id, by=user, now=now)
        except IntegrityError:
            fresh = False
        if not fresh:
            raise Refused(409, f"permission request {request_id!r} was answered already")
