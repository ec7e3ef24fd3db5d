"""The callback endpoints a VM calls with its callback token (docs/callback-api.md)."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_callback
from control_plane.dispatch import sessions, workspaces
from control_plane.identity.secrets import SecretStoreError
from control_plane.storage import node_store


class ReadyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str
    capacity: dict[str, Any] = Field(default_factory=dict)


class SessionReport(BaseModel):
    model_config = ConfigDict(extra="allow")
    session_id: str
    state: str
    agent: str | None = None


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sessions: list[SessionReport] = Field(default_factory=list)
    usage: dict[str, Any] = Field(default_factory=dict)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    session_id: str = Field(min_length=1)
    seq: int = Field(ge=1)
    ts: float
    type: str
    data: Any = None


class EventsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    events: list[EventIn]


class CredentialsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    agent: str = Field(min_length=1)


async def ready(request: Request) -> JSONResponse:
    node_id = request.path_params["node_id"]
    await require_callback(request, node_id)
    body = await parse_body(request, ReadyBody)
    plane = plane_of(request)
    await to_thread.run_sync(
        node_store.record_ready, plane.engine, node_id, body.version, body.capacity, plane.clock()
    )
    return JSONResponse({"ok": True})


async def heartbeat(request: Request) -> JSONResponse:
    node_id = request.path_params["node_id"]
    claims = await require_callback(request, node_id)
    body = await parse_body(request, HeartbeatBody)
    plane = plane_of(request)
    sessions = [s.model_dump() for s in body.sessions]
    await to_thread.run_sync(
        node_store.record_heartbeat, plane.engine, node_id, sessions, body.usage, plane.clock()
    )
    token = None
    if plane.tokens.needs_refresh(claims):
        token = await to_thread.run_sync(plane.tokens.refresh_callback_token, claims)
    return JSONResponse({"interval_s": plane.settings.heartbeat_interval_s, "token": token})


async def events(request: Request) -> JSONResponse:
    node_id = request.path_params["node_id"]
    await require_callback(request, node_id)
    body = await parse_body(request, EventsBody)
    plane = plane_of(request)
    batch = [node_store.NodeEvent(e.session_id, e.seq, e.ts, e.type, e.data) for e in body.events]
    result = await to_thread.run_sync(
        node_store.store_events, plane.engine, node_id, batch, plane.clock()
    )
    return JSONResponse({"stored": result.stored, "duplicates": result.duplicates})


async def agent_credentials(request: Request) -> JSONResponse:
    """Only for a session the control plane made on this node, only that session's agent."""
    node_id = request.path_params["node_id"]
    session_id = request.path_params["session_id"]
    await require_callback(request, node_id)
    body = await parse_body(request, CredentialsBody)
    plane = plane_of(request)
    session = await to_thread.run_sync(sessions.get_session, plane.engine, session_id)
    refusal = sessions.credentials_refusal(session, session_id, node_id, body.agent)
    if refusal is not None:
        raise ApiError(refusal.status, refusal.message)
    assert session is not None
    try:
        env = await to_thread.run_sync(plane.secrets.env_for, session.agent)
    except SecretStoreError as exc:
        raise ApiError(500, str(exc)) from exc
    # The owner lets the node check the session is the one it runs, before the agent
    # gets the values.
    answer = {"env": env, "owner": session.owner}
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


def _details(engine: Any, session_id: str, node_id: str) -> dict[str, Any] | None:
    session = sessions.get_session(engine, session_id)
    if session is None or session.node_id != node_id:
        return None  # another node's session is none of this node's business
    reservation = None
    if session.workspace_id is not None:
        ws = workspaces.load_workspace(engine, session.workspace_id)
        reservation = ws.reservation if ws is not None else None
    return {
        "sessionId": session.session_id,
        "agent": session.agent,
        "owner": session.owner,
        "reservation": reservation,
        "endedAt": session.ended_at,
    }


async def session_details(request: Request) -> JSONResponse:
    """What the control plane recorded for a session it made on this node: whose it is,
    its agent, its workspace's reservation. The node checks a viewer's `session/start`
    against it (docs/callback-api.md)."""
    node_id = request.path_params["node_id"]
    session_id = request.path_params["session_id"]
    await require_callback(request, node_id)
    plane = plane_of(request)
    found = await to_thread.run_sync(_details, plane.engine, session_id, node_id)
    if found is None:
        raise ApiError(404, f"no such session: the control plane made no session {session_id!r}")
    return JSONResponse(found, headers={"Cache-Control": "no-store"})


routes = [
    Route("/api/nodes/{node_id}/ready", ready, methods=["POST"]),
    Route("/api/nodes/{node_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/api/nodes/{node_id}/events", events, methods=["POST"]),
    Route(
        "/api/nodes/{node_id}/sessions/{session_id}/agent-credentials",
        agent_credentials,
        methods=["POST"],
    ),
    Route(
        "/api/nodes/{node_id}/sessions/{session_id}/details",
        session_details,
        methods=["POST"],
    ),
]
