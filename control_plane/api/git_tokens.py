"""A node's GitHub calls for its workspaces (callback token; docs/callback-api.md):

- `git-token`: a short-lived installation token for the repository of one workspace placed
  on that node, and for nothing else: `read` (contents) for the agent's git, `write`
  (contents, pull requests) for the node's own push;
- `pull-request`: the task's branch, pushed, becomes a pull request into the repository's
  default branch (never from it); recorded with the workspace.
"""

from __future__ import annotations

from typing import Literal

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_callback
from control_plane.api.github import github_app_of, github_failure
from control_plane.dispatch import workspaces
from control_plane.github import access, rules
from control_plane.github.app import GitHubApp, GitHubError, InstallationToken
from control_plane.github.pulls import PullRequest, default_branch, open_or_find_pull_request


class GitTokenBody(BaseModel):
    """`read` for the agent's git (the credential helper), `write` for the node's own push."""

    model_config = ConfigDict(extra="forbid")
    access: Literal["read", "write"] = "write"


class PullRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    head: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=256)
    body: str | None = Field(default=None, max_length=65536)


def _facts(
    engine: Engine, workspace_id: str
) -> tuple[rules.GitTokenFacts, access.RepositoryGrant | None]:
    ws = workspaces.load_workspace(engine, workspace_id)
    grant = access.workspace_repository(engine, workspace_id) if ws is not None else None
    facts = rules.GitTokenFacts(
        node_id=ws.node_id if ws is not None else None,
        active=ws is not None and ws.state == workspaces.ACTIVE,
        repository=grant.repository if grant is not None else None,
        link_proven=grant is not None and access.grant_still_holds(engine, grant),
    )
    return facts, grant


async def _grant(request: Request) -> access.RepositoryGrant:
    """The grant of the node's own active workspace, its owner's link still proven."""
    node_id = request.path_params["node_id"]
    await require_callback(request, node_id)
    workspace_id = request.path_params["workspace_id"]
    facts, grant = await to_thread.run_sync(_facts, plane_of(request).engine, workspace_id)
    refusal = rules.git_token_refusal(node_id, facts)
    if refusal is not None:
        raise ApiError(*refusal)
    assert grant is not None
    return grant


async def _token(
    request: Request, grant: access.RepositoryGrant, level: str = "write"
) -> tuple[GitHubApp, InstallationToken]:
    """A fresh installation token for the grant's repository alone, at `level`."""
    app = github_app_of(request)
    try:
        token = await app.workspace_token(
            request.path_params["workspace_id"],
            grant.installation_id,
            rules.parse_repository(grant.repository),
            rules.ACCESS_PERMISSIONS[level],
        )
    except GitHubError as exc:
        raise github_failure(exc, "an installation token") from exc
    return app, token


async def git_token(request: Request) -> JSONResponse:
    grant = await _grant(request)
    body = await parse_body(request, GitTokenBody, optional=True)
    _app, token = await _token(request, grant, body.access)
    answer = {
        "token": token.token,
        "expiresAt": token.expires_at,
        "repository": grant.repository,
        "permissions": token.permissions,
    }
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


def _pull_api(pull: PullRequest) -> dict[str, object]:
    return {
        "number": pull.number,
        "url": pull.url,
        "head": pull.head,
        "headCommit": pull.head_sha,
        "base": pull.base,
    }


async def pull_request(request: Request) -> JSONResponse:
    """Open the task's pull request, once: a second call answers the recorded one (200)."""
    grant = await _grant(request)
    body = await parse_body(request, PullRequestBody)
    workspace_id = request.path_params["workspace_id"]
    engine = plane_of(request).engine
    recorded = await to_thread.run_sync(access.pull_request_of, engine, workspace_id)
    if recorded is not None:
        return JSONResponse(_pull_api(recorded))
    app, token = await _token(request, grant)
    repo = rules.parse_repository(grant.repository)
    try:
        base = await default_branch(app.api, token, repo)
    except GitHubError as exc:
        raise github_failure(exc, "the repository") from exc
    refusal = rules.pull_request_refusal(body.head, base)
    if refusal is not None:
        raise ApiError(422, refusal)
    try:
        # A retry after a lost answer finds the one GitHub made (it allows one open per head).
        pull = await open_or_find_pull_request(
            app.api, token, repo, head=body.head, base=base, title=body.title, body=body.body
        )
    except GitHubError as exc:
        if exc.status == 422:  # GitHub's validation: no such branch, nothing to compare
            raise ApiError(422, f"GitHub refused the pull request: {exc.message}") from exc
        raise github_failure(exc, "the pull request") from exc
    if not await to_thread.run_sync(access.record_pull_request, engine, workspace_id, pull):
        raise ApiError(409, "another pull request was recorded for this workspace meanwhile")
    return JSONResponse(_pull_api(pull), status_code=201)


routes = [
    Route("/api/nodes/{node_id}/workspaces/{workspace_id}/git-token", git_token, methods=["POST"]),
    Route(
        "/api/nodes/{node_id}/workspaces/{workspace_id}/pull-request",
        pull_request,
        methods=["POST"],
    ),
]
