"""Agent sessions made by an explicit call (user tokens): `POST /api/nodes/{node}/sessions`
names the agent (and the workspace); the answer's `sessionId` is what the daemon's
`session/start` is to be given. Only such sessions, and those placing a task makes, get
their agent's credentials (api/callbacks)."""

from __future__ import annotations

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.demand import quotas
from control_plane.dispatch import sessions, workspaces
from control_plane.identity.tokens import ADMIN_SCOPE
from control_plane.storage import machines


class SessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    agent: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    workspace_id: str | None = Field(default=None, alias="workspaceId")
    # An admin may name whose session it is when there is no workspace to say so.
    owner: str | None = Field(default=None, min_length=1, max_length=128)


def _check_session_quota(conn: Connection, limits: quotas.Limits, owner: str) -> None:
    """The owner's sessions quota, counted under the placement lock (replicas take turns)."""
    machines.take_placement_lock(conn)
    held = workspaces.user_holding(conn, owner)
    if refused := quotas.refusal(limits, held, quotas.Ask(None)):
        raise ApiError(429, refused.message, **refused.to_json())


def _make(
    engine: Engine,
    node_id: str,
    body: SessionBody,
    *,
    actor: str,
    admin: bool,
    now: float,
    limits: quotas.Limits,
) -> sessions.AgentSession:
    with engine.begin() as conn:
        facts = None
        if body.workspace_id is not None:
            ws = workspaces.get_workspace(conn, body.workspace_id)
            if ws is not None:
                facts = sessions.WorkspaceFacts(
                    ws.workspace_id, ws.owner, ws.node_id, ws.state == workspaces.ACTIVE
                )
        refusal = sessions.creation_refusal(
            actor=actor,
            admin=admin,
            node_id=node_id,
            node_known=workspaces.node_is_known(conn, node_id),
            workspace_id=body.workspace_id,
            workspace=facts,
        )
        if refusal is not None:
            raise ApiError(refusal.status, refusal.message)
        if body.owner is not None and not admin:
            raise ApiError(403, "forbidden: only an admin may name a session's owner")
        owner = facts.owner if facts is not None else body.owner or actor
        _check_session_quota(conn, limits, owner)
        session = sessions.AgentSession(
            session_id=sessions.new_session_id(),
            node_id=node_id,
            agent=body.agent,
            owner=owner,
            workspace_id=body.workspace_id,
            created_by=actor,
            created_at=now,
        )
        sessions.insert_session(conn, session)
    return session


async def make_session(request: Request) -> JSONResponse:
    claims = require_user(request)
    assert claims.sub is not None
    body = await parse_body(request, SessionBody)
    plane = plane_of(request)
    node_id = request.path_params["node_id"]
    actor, admin, now = str(claims.sub), ADMIN_SCOPE in claims.scopes, plane.clock()
    made = await to_thread.run_sync(
        lambda: _make(
            plane.engine,
            node_id,
            body,
            actor=actor,
            admin=admin,
            now=now,
            limits=workspaces.quota_limits(plane.settings),
        )
    )
    return JSONResponse(made.to_api(), status_code=201)


async def get_session(request: Request) -> JSONResponse:
    claims = require_user(request)
    plane = plane_of(request)
    found = await to_thread.run_sync(
        sessions.get_session, plane.engine, request.path_params["session_id"]
    )
    visible = found is not None and (ADMIN_SCOPE in claims.scopes or found.owner == claims.sub)
    if found is None or not visible or found.node_id != request.path_params["node_id"]:
        raise ApiError(404, "no such session on this node")
    return JSONResponse(found.to_api())


routes = [
    Route("/api/nodes/{node_id}/sessions", make_session, methods=["POST"]),
    Route("/api/nodes/{node_id}/sessions/{session_id}", get_session, methods=["GET"]),
]
