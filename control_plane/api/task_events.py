"""A task's events (user tokens, the task's owner or an admin): the stored ones after a
seq, and the live form as Server-Sent Events (`id: seq`, `event: type`, `data: event`),
with `event: status` on each status change and a final `event: end` with the task's record.
Both read what the node sent through the outbox, so any replica serves any task."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import anyio
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, plane_of, require_user
from control_plane.dispatch import status as st
from control_plane.dispatch import views
from control_plane.identity.tokens import ADMIN_SCOPE, Claims
from control_plane.plane import ControlPlane

STREAM_POLL_S = 0.2  # how often the stream looks for new events and status changes
KEEP_ALIVE_S = 15.0  # a comment line while idle, so proxies keep the stream open
END_GRACE_S = 10.0  # how long a rested task's stream waits for its prompt's last events
_PAGE = 500


def wake_dispatcher(request: Request) -> None:
    """This replica's dispatcher passes now (other replicas at their next tick)."""
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()


def task_owner(request: Request, claims: Claims) -> str:
    """Whose `taskId` the path names: the caller's own; an admin's `?owner=` (any user's,
    "" for rows from before owners). A user's `?owner=` is ignored: ids are per owner."""
    owner = str(claims.sub)
    if ADMIN_SCOPE in claims.scopes:
        owner = request.query_params.get("owner", owner)
    return owner


async def visible_task(request: Request) -> tuple[str, dict[str, Any]]:
    """The task's key and view, for its owner (or an admin naming `?owner=`); else 404,
    the same for another's task and for none."""
    claims = require_user(request)
    plane = plane_of(request)
    owner, task_id = task_owner(request, claims), request.path_params["task_id"]
    view = await to_thread.run_sync(views.owned_task_view, plane.engine, owner, task_id)
    if view is None or not (ADMIN_SCOPE in claims.scopes or view[1]["owner"] == claims.sub):
        raise ApiError(404, "no such task")
    return view


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(422, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(422, f"{name} must be between {low} and {high}")
    return value


async def task_events(request: Request) -> JSONResponse:
    _, view = await visible_task(request)
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", _PAGE, 1, views.EVENTS_PAGE_MAX)
    events: list[dict[str, Any]] = []
    if view["nodeId"] is not None and view["sessionId"] is not None:
        events = await to_thread.run_sync(
            views.session_events,
            plane_of(request).engine,
            view["nodeId"],
            view["sessionId"],
            after,
            limit,
        )
    return JSONResponse({"events": events, "next": events[-1]["seq"] if events else after})


def _sse(event: str, data: Any, seq: int | None = None) -> str:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(plane: ControlPlane, task_id: str, after: int) -> AsyncIterator[str]:
    last = after
    shown: tuple[Any, Any] | None = None
    idle = 0.0
    while True:
        view = await to_thread.run_sync(views.task_view, plane.engine, task_id)
        if view is None:
            return
        events: list[dict[str, Any]] = []
        if view["nodeId"] is not None and view["sessionId"] is not None:
            events = await to_thread.run_sync(
                views.session_events, plane.engine, view["nodeId"], view["sessionId"], last, _PAGE
            )
        for event in events:
            last = event["seq"]
            yield _sse(event["type"], event, event["seq"])
        now = (view["status"], view["outcome"])
        if now != shown:
            shown = now
            yield _sse("status", {"status": view["status"], "outcome": view["outcome"]})
        if not events and await _told_all(plane, view, last):
            view.pop("owner", None)
            yield _sse("end", view)
            return
        if events:
            idle = 0.0
        elif idle >= KEEP_ALIVE_S:
            idle = 0.0
            yield ": keep-alive\n\n"
        await anyio.sleep(STREAM_POLL_S)
        idle += STREAM_POLL_S


async def _told_all(plane: ControlPlane, view: dict[str, Any], last: int) -> bool:
    """Whether the task rests (ended, or awaiting a follow-up) and the stream has shown
    what led there: the outcome may come over the node connection before the outbox
    brings the prompt's events, so a prompt's end waits for its `prompt.finished` (a
    while at most: `END_GRACE_S` after the task ended)."""
    if not (st.is_end(view["status"]) or view["status"] == "awaiting_follow_up"):
        return False
    prompt_id = (view["outcome"] or {}).get("promptId")
    if prompt_id is None or view["nodeId"] is None or view["sessionId"] is None:
        return True
    seq = await to_thread.run_sync(
        views.finished_seq, plane.engine, view["nodeId"], view["sessionId"], prompt_id
    )
    if seq is not None:
        return seq <= last
    rested = view["transitions"][-1]["at"] if view["transitions"] else None
    if rested is None:
        return True
    return plane.clock() - datetime.fromisoformat(rested).timestamp() > END_GRACE_S


async def task_event_stream(request: Request) -> StreamingResponse:
    key, _ = await visible_task(request)
    after = _int_param(request, "after", 0, 0, 2**62)
    resumed = request.headers.get("last-event-id", "").strip()
    if resumed:
        if not resumed.isdigit():
            raise ApiError(422, "Last-Event-ID must be an event's seq")
        after = max(after, int(resumed))
    return StreamingResponse(
        _stream(plane_of(request), key, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


routes = [
    Route("/api/tasks/{task_id}/events", task_events, methods=["GET"]),
    Route("/api/tasks/{task_id}/events/stream", task_event_stream, methods=["GET"]),
]
