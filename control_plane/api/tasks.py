"""Tasks and workspaces (user tokens): submit a task (placed into a workspace on a node,
with its repository when it names one: the user's GitHub link checked first),
read a task or workspace, release a workspace. A user sees their own, with the user's
copy of the placement explanation (nothing of other users or of the fleet); an admin all,
and the full explanation with `?explain=full`. Task ids are the owner's: an admin names
whose with `?owner=`."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.api.github import github_app_of
from control_plane.api.task_events import task_owner, wake_dispatcher
from control_plane.demand.agent_settings import SettingsError
from control_plane.demand.placement import user_copy
from control_plane.demand.resolver import RequirementsError
from control_plane.dispatch import catalog, runs, tasks, views, workspaces
from control_plane.github import access, rules
from control_plane.identity.tokens import ADMIN_SCOPE, Claims


def _json(
    record: Any, status: int = 200, *, full: bool = False, extra: dict[str, Any] | None = None
) -> JSONResponse:
    body = {**record.model_dump(by_alias=True, mode="json"), **(extra or {})}
    if not full:  # the user's copy: theirs only (item 11 of issue 28)
        body["placementExplanation"] = user_copy(body["placementExplanation"], record.owner)
    return JSONResponse(body, status_code=status)


def _full(request: Request, claims: Claims) -> bool:
    """`?explain=full`: the whole explanation, for admins only (403 for anyone else)."""
    explain = request.query_params.get("explain", "user")
    if explain not in {"user", "full"}:
        raise ApiError(422, "explain must be 'user' or 'full'")
    if explain == "full" and ADMIN_SCOPE not in claims.scopes:
        raise ApiError(403, "forbidden: the full explanation is for admins")
    return explain == "full"


def _may_see(claims: Claims, owner: str | None) -> bool:
    return ADMIN_SCOPE in claims.scopes or (owner is not None and owner == claims.sub)


async def _repository(
    request: Request, sub: tasks.TaskSubmission, user: str
) -> tasks.RepositoryAsk | None:
    """The task's repository, its grant checked before anything is placed or a node asked
    for: 422 (malformed, no App), 403 (no proven link of the user's to the installation
    that holds it), 502/503 (GitHub failed)."""
    if sub.repository is None:
        if sub.base_branch is not None or sub.pull_request:
            raise ApiError(422, "baseBranch and pullRequest are only for a task with a repository")
        return None
    if sub.base_branch is not None and (why := rules.branch_refusal(sub.base_branch)):
        raise ApiError(422, f"baseBranch: {why}")
    if sub.task_id is not None and sub.base_branch == rules.task_branch(sub.task_id):
        raise ApiError(422, f"baseBranch may not be the task's own branch ({sub.base_branch})")
    plane = plane_of(request)
    if plane.settings.github_app_id is None:
        raise ApiError(
            422, "a task with a repository needs a GitHub App, and this control plane has none"
        )
    app = github_app_of(request)
    try:
        grant = await access.repository_access(plane.engine, app, user, sub.repository)
    except access.RepositoryRefusedError as exc:
        raise ApiError(exc.status, exc.reason) from exc
    return tasks.RepositoryAsk(grant, sub.base_branch, sub.pull_request)


async def submit_task(request: Request) -> JSONResponse:
    claims = require_user(request)
    assert claims.sub is not None
    sub = await parse_body(request, tasks.TaskSubmission)
    plane = plane_of(request)
    try:
        runs.prompt_blocks(sub.prompt)
    except runs.PromptError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    known = await to_thread.run_sync(catalog.known_agents, plane.engine)
    if sub.agent not in known:
        raise ApiError(422, f"unknown agent {sub.agent!r}", knownAgents=sorted(known))
    s = plane.settings
    full = _full(request, claims)
    repository = await _repository(request, sub, str(claims.sub))
    admin = ADMIN_SCOPE in claims.scopes
    limits = workspaces.quota_limits(s)
    ctx = tasks.Placing(
        s.default_provider, s.node_stale_after_s, s.max_nodes, plane.clock(), limits, admin
    )
    try:
        record = await to_thread.run_sync(
            tasks.submit_task, plane.engine, sub, str(claims.sub), ctx, repository
        )
    except (RequirementsError, SettingsError) as exc:
        raise ApiError(422, str(exc), layer=exc.layer.value, field=exc.field) from exc
    except tasks.TaskError as exc:
        detail = dict(exc.detail)
        if "placement" in detail and not full:
            detail["placement"] = user_copy(detail["placement"], str(claims.sub))
            raise ApiError(422, detail["placement"]["summary"], **detail) from exc
        raise ApiError(422, str(exc), **detail) from exc
    except tasks.QuotaError as exc:
        raise ApiError(429, str(exc), **exc.refusal.to_json()) from exc
    except tasks.TaskExistsError as exc:
        raise ApiError(409, str(exc)) from exc
    wake_dispatcher(request)
    return _json(record, 201, full=full)


async def get_task(request: Request) -> JSONResponse:
    claims = require_user(request)
    full = _full(request, claims)
    plane = plane_of(request)
    owner = task_owner(request, claims)
    task_id = request.path_params["task_id"]
    record = await to_thread.run_sync(tasks.load_task, plane.engine, owner, task_id)
    if record is None or not _may_see(claims, record.owner):
        raise ApiError(404, "no such task")
    view = await to_thread.run_sync(views.task_view, plane.engine, record.key)
    return _json(record, full=full, extra=view)


async def _visible_workspace(request: Request) -> workspaces.WorkspaceRecord:
    claims = require_user(request)
    _full(request, claims)
    ws = await to_thread.run_sync(
        workspaces.load_workspace, plane_of(request).engine, request.path_params["workspace_id"]
    )
    if ws is None or not _may_see(claims, ws.owner):
        raise ApiError(404, "no such workspace")
    return ws


async def get_workspace(request: Request) -> JSONResponse:
    return _json(await _visible_workspace(request), full=_full(request, require_user(request)))


async def release_workspace(request: Request) -> JSONResponse:
    ws = await _visible_workspace(request)
    plane = plane_of(request)
    released = await to_thread.run_sync(
        workspaces.release_workspace, plane.engine, ws.workspace_id, plane.clock()
    )
    return _json(released, full=_full(request, require_user(request)))


routes = [
    Route("/api/tasks", submit_task, methods=["POST"]),
    Route("/api/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/api/workspaces/{workspace_id}", get_workspace, methods=["GET"]),
    Route("/api/workspaces/{workspace_id}/release", release_workspace, methods=["POST"]),
]
