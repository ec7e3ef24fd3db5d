"""What a user asks of their task (user tokens, the owner or an admin): answer a permission
request, send a follow-up prompt, close a task awaiting a follow-up, cancel. Each is
recorded and answered at once; the dispatcher carries it to the node."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.api.task_events import visible_task, wake_dispatcher
from control_plane.dispatch import asks, runs


class PermissionAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    option_id: str = Field(alias="optionId", min_length=1, max_length=256)


class FollowUp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | list[Any]


async def answer_permission(request: Request) -> JSONResponse:
    key, _ = await visible_task(request)
    body = await parse_body(request, PermissionAnswer)
    claims = require_user(request)
    plane = plane_of(request)
    request_id = request.path_params["request_id"]
    try:
        await to_thread.run_sync(
            lambda: asks.answer_permission(
                plane.engine,
                key,
                request_id,
                body.option_id,
                user=str(claims.sub),
                now=plane.clock(),
            )
        )
    except asks.Refused as exc:
        raise ApiError(exc.status, exc.message) from exc
    wake_dispatcher(request)
    return JSONResponse({"requestId": request_id, "optionId": body.option_id})


async def follow_up(request: Request) -> JSONResponse:
    key, _ = await visible_task(request)
    body = await parse_body(request, FollowUp)
    try:
        blocks = runs.prompt_blocks(body.prompt)
    except runs.PromptError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    plane = plane_of(request)
    try:
        prompt_id = await to_thread.run_sync(
            asks.follow_up, plane.engine, key, blocks, plane.clock()
        )
    except asks.Refused as exc:
        raise ApiError(exc.status, exc.message) from exc
    wake_dispatcher(request)
    return JSONResponse({"promptId": prompt_id}, status_code=202)


async def close(request: Request) -> JSONResponse:
    key, view = await visible_task(request)
    plane = plane_of(request)
    try:
        status = await to_thread.run_sync(asks.close, plane.engine, key, plane.clock())
    except asks.Refused as exc:
        raise ApiError(exc.status, exc.message) from exc
    wake_dispatcher(request)
    return JSONResponse({"taskId": view["taskId"], "status": status})


async def cancel(request: Request) -> JSONResponse:
    key, view = await visible_task(request)
    plane = plane_of(request)
    try:
        status = await to_thread.run_sync(asks.cancel, plane.engine, key, plane.clock())
    except asks.Refused as exc:
        raise ApiError(exc.status, exc.message) from exc
    wake_dispatcher(request)
    return JSONResponse({"taskId": view["taskId"], "status": status}, status_code=202)


routes = [
    Route("/api/tasks/{task_id}/permissions/{request_id}", answer_permission, methods=["POST"]),
    Route("/api/tasks/{task_id}/prompts", follow_up, methods=["POST"]),
    Route("/api/tasks/{task_id}/close", close, methods=["POST"]),
    Route("/api/tasks/{task_id}/cancel", cancel, methods=["POST"]),
]
