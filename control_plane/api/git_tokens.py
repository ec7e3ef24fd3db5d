"""A node's workspace git token (callback token): a short-lived installation token for the
repository of one workspace placed on that node, and for nothing else (docs/callback-api.md).
"""

from __future__ import annotations

from anyio import to_thread
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, plane_of, require_callback
from control_plane.api.github import github_app_of, github_failure
from control_plane.dispatch import workspaces
from control_plane.github import access, rules
from control_plane.github.app import GitHubError


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


async def git_token(request: Request) -> JSONResponse:
    node_id = request.path_params["node_id"]
    workspace_id = request.path_params["workspace_id"]
    await require_callback(request, node_id)
    plane = plane_of(request)
    facts, grant = await to_thread.run_sync(_facts, plane.engine, workspace_id)
    refusal = rules.git_token_refusal(node_id, facts)
    if refusal is not None:
        raise ApiError(*refusal)
    assert grant is not None
    app = github_app_of(request)
    try:
        token = await app.installation_token(
            grant.installation_id, rules.parse_repository(grant.repository)
        )
    except GitHubError as exc:
        raise github_failure(exc, "an installation token") from exc
    answer = {
        "token": token.token,
        "expiresAt": token.expires_at,
        "repository": grant.repository,
        "permissions": token.permissions,
    }
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


routes = [
    Route("/api/nodes/{node_id}/workspaces/{workspace_id}/git-token", git_token, methods=["POST"]),
]
