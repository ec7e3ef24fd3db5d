"""Task submission (user tokens only): resolve the reservation, store the audit columns."""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane import tasks
from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.resolver import RequirementsError


def _json(record: tasks.TaskRecord, status: int = 200) -> JSONResponse:
    return JSONResponse(record.model_dump(by_alias=True, mode="json"), status_code=status)


async def submit_task(request: Request) -> JSONResponse:
    require_user(request)
    sub = await parse_body(request, tasks.TaskSubmission)
    plane = plane_of(request)
    try:
        record = tasks.plan_task(sub, plane.settings.default_provider)
    except RequirementsError as exc:
        raise ApiError(422, str(exc), layer=exc.layer.value, field=exc.field) from exc
    except tasks.TaskError as exc:
        raise ApiError(422, str(exc)) from exc
    try:
        await to_thread.run_sync(tasks.store_task, plane.engine, record, plane.clock())
    except tasks.TaskExistsError as exc:
        raise ApiError(409, str(exc)) from exc
    return _json(record, 201)


async def get_task(request: Request) -> JSONResponse:
    require_user(request)
    plane = plane_of(request)
    record = await to_thread.run_sync(tasks.load_task, plane.engine, request.path_params["task_id"])
    if record is None:
        raise ApiError(404, "no such task")
    return _json(record)


routes = [
    Route("/api/tasks", submit_task, methods=["POST"]),
    Route("/api/tasks/{task_id}", get_task, methods=["GET"]),
]
