"""`GET /api/usage` (user token): the caller's token usage and cost over their tasks; an
admin names another user with `?owner=`. Summed from events nodes already sent."""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, plane_of, require_user
from control_plane.api.task_events import task_owner
from control_plane.dispatch import usage

MAX_OWNER = 128  # as long as a task's owner can be


async def get_usage(request: Request) -> JSONResponse:
    claims = require_user(request)
    owner = task_owner(request, claims)  # a user's `?owner=` is ignored: their own only
    if len(owner) > MAX_OWNER:
        raise ApiError(422, f"owner: at most {MAX_OWNER} characters")
    body = await to_thread.run_sync(usage.owner_usage, plane_of(request).engine, owner)
    return JSONResponse(body)


routes = [Route("/api/usage", get_usage, methods=["GET"])]
