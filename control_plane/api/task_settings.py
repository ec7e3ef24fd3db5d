"""`POST /api/tasks/{id}/settings` `{"mode"?, "model"?}`: the owner changes the mode or
model of their running task. Recorded at once (202); the dispatcher relays it to the
node's session (control_plane/dispatch/setting_changes.py) and `GET /api/tasks/{id}`
shows it under `settingChanges` with when it was relayed and any refusal. The owner only:
another user's task, and an admin naming `?owner=`, answer 404 as for no task (a change
acts as the owner in their session)."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.api.task_events import wake_dispatcher
from control_plane.demand.agent_settings import MAX_SHORT
from control_plane.dispatch import setting_changes, views

Value = Annotated[str, Field(min_length=1, max_length=MAX_SHORT)]


class SettingsChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Value | None = None
    model: Value | None = None


async def change_settings(request: Request) -> JSONResponse:
    claims = require_user(request)
    plane = plane_of(request)
    owner, task_id = str(claims.sub), request.path_params["task_id"]
    found = await to_thread.run_sync(views.owned_task_view, plane.engine, owner, task_id)
    if found is None or found[1]["owner"] != owner:
        raise ApiError(404, "no such task")
    body = await parse_body(request, SettingsChange)
    wanted = body.model_dump(exclude_none=True)
    if not wanted:
        raise ApiError(422, "give mode, model or both")
    key = found[0]
    try:
        made = await to_thread.run_sync(
            setting_changes.ask, plane.engine, key, wanted, owner, plane.clock()
        )
    except setting_changes.ChangeRefused as exc:
        raise ApiError(409, str(exc)) from exc
    wake_dispatcher(request)
    fields = [n for n in setting_changes.FIELDS if n in wanted]
    changes = [
        {"changeId": c, "field": n, "value": wanted[n]} for c, n in zip(made, fields, strict=True)
    ]
    return JSONResponse({"taskId": task_id, "changes": changes}, status_code=202)


routes = [Route("/api/tasks/{task_id}/settings", change_settings, methods=["POST"])]
