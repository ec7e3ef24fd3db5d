"""The callback endpoints a VM calls with its callback token (docs/callback-api.md).

A node is not trusted with the database: the numbers placement reads are bounded, each
event's fields and data are bounded, and so is a batch (past the bounds: 413/422, and
nothing of the request is stored).
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import (
    INT64_MAX,
    ApiError,
    parse_body,
    plane_of,
    require_callback,
)
from control_plane.demand.placement import MAX_NODE_BYTES, MAX_NODE_CPUS
from control_plane.dispatch import sessions, task_settings, workspaces
from control_plane.identity import user_secrets
from control_plane.identity.secrets import SecretStoreError
from control_plane.storage import machines, node_store

# No control characters (PostgreSQL's text refuses NUL), no longer than their columns
# (node_events: session_id 128, type 64).
_SESSION_ID = r"^[^\x00-\x1f\x7f]{1,128}$"
_EVENT_TYPE = r"^[^\x00-\x1f\x7f]{1,64}$"
# Events per batch: the daemon's outbox sends at most 500 (VM_AGENT outbox settings).
MAX_EVENTS_PER_BATCH = 1000


class Totals(BaseModel):
    """The numbers placement reads from `ready` and heartbeats; other keys are kept as sent."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    cpus: int | None = Field(default=None, ge=0, le=MAX_NODE_CPUS)
    mem_total_bytes: int | None = Field(default=None, ge=0, le=MAX_NODE_BYTES)
    disk_total_bytes: int | None = Field(default=None, ge=0, le=MAX_NODE_BYTES)

    def stored(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class ReadyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str = Field(max_length=64)
    capacity: Totals = Field(default_factory=Totals)


class SessionReport(BaseModel):
    """As the daemon describes a session. A viewer chose its id (any string): unbounded
    here, so that one odd session cannot stop its node's heartbeats (stored as JSON,
    overwritten by the next heartbeat; the body's size bounds it)."""

    model_config = ConfigDict(extra="allow")
    session_id: str
    state: str
    agent: str | None = None


# Far above any real count (sessions and terminals are capped per node), low enough that
# no report overflows a column or a sum.
MAX_ACTIVITY = 1_000_000


class Activity(BaseModel):
    """What runs on the node besides its sessions' states: the lifecycle's `busy` fact."""

    model_config = ConfigDict(extra="ignore", strict=True)
    turns: int = Field(default=0, ge=0, le=MAX_ACTIVITY)  # prompts in flight
    permissions: int = Field(default=0, ge=0, le=MAX_ACTIVITY)  # waiting for a person
    terminals: int = Field(default=0, ge=0, le=MAX_ACTIVITY)  # people's terminals open
    background: int = Field(default=0, ge=0, le=MAX_ACTIVITY)  # other processes in sessions


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sessions: list[SessionReport] = Field(default_factory=list)
    usage: Totals = Field(default_factory=Totals)
    activity: Activity = Field(default_factory=Activity)
    drained: bool = Field(default=False, strict=True)  # draining, and nothing runs


class EventIn(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    session_id: str = Field(pattern=_SESSION_ID)
    seq: int = Field(ge=1, le=INT64_MAX)
    ts: float = Field(ge=0)
    type: str = Field(pattern=_EVENT_TYPE)
    data: Any = None


class EventsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    events: list[EventIn] = Field(max_length=MAX_EVENTS_PER_BATCH)


class EmptyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CredentialsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    agent: str = Field(min_length=1)


async def ready(request: Request) -> JSONResponse:
    node_id = request.path_params["node_id"]
    await require_callback(request, node_id)
    body = await parse_body(request, ReadyBody)
    plane = plane_of(request)
    await to_thread.run_sync(
        node_store.record_ready,
        plane.engine,
        node_id,
        body.version,
        body.capacity.stored(),
        plane.clock(),
    )
    return JSONResponse({"ok": True})


async def heartbeat(request: Request) -> JSONResponse:
    node_id = request.path_params["node_id"]
    claims = await require_callback(request, node_id)
    body = await parse_body(request, HeartbeatBody, relayed=True)  # viewers' session ids
    plane = plane_of(request)
    sessions = [s.model_dump() for s in body.sessions]
    # Stored with the usage (a JSON column): what the node lifecycle reads of its work.
    usage = {
        **body.usage.stored(),
        "activity": body.activity.model_dump(),
        "drained": body.drained,
    }
    await to_thread.run_sync(
        node_store.record_heartbeat, plane.engine, node_id, sessions, usage, plane.clock()
    )
    drain = await to_thread.run_sync(machines.told_to_drain, plane.engine, node_id)
    token = None
    if plane.tokens.needs_refresh(claims):
        token = await to_thread.run_sync(plane.tokens.refresh_callback_token, claims)
    answer = {"interval_s": plane.settings.heartbeat_interval_s, "token": token, "drain": drain}
    return JSONResponse(answer)


async def events(request: Request) -> JSONResponse:
    node_id = request.path_params["node_id"]
    await require_callback(request, node_id)
    # Agents' data may hold integers past 64 bits and NUL (the daemon keeps them exact);
    # the model bounds the fields that go to columns.
    body = await parse_body(request, EventsBody, relayed=True)
    plane = plane_of(request)
    s = plane.settings
    batch = [node_store.NodeEvent(e.session_id, e.seq, e.ts, e.type, e.data) for e in body.events]
    try:
        result = await to_thread.run_sync(
            lambda: node_store.store_events(
                plane.engine,
                node_id,
                batch,
                plane.clock(),
                max_data_bytes=s.max_event_data_bytes,
                max_node_bytes=s.max_node_event_bytes,
            )
        )
    except (node_store.EventTooLargeError, node_store.NodeEventQuotaError) as exc:
        raise ApiError(413, str(exc), limit=exc.limit) from None
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


async def mcp_secrets(request: Request) -> JSONResponse:
    """The secrets the settings of the task a session runs name, of the session's owner:
    only for a session the control plane made on this node, not ended (issue 25)."""
    node_id = request.path_params["node_id"]
    session_id = request.path_params["session_id"]
    await require_callback(request, node_id)
    await parse_body(request, EmptyBody, optional=True)
    plane = plane_of(request)
    session = await to_thread.run_sync(sessions.get_session, plane.engine, session_id)
    agent = session.agent if session is not None else ""
    refusal = sessions.credentials_refusal(session, session_id, node_id, agent)
    if refusal is not None:
        raise ApiError(refusal.status, refusal.message)
    assert session is not None
    names = await to_thread.run_sync(
        task_settings.session_secret_names, plane.engine, session.workspace_id, session.owner
    )
    try:
        values = await to_thread.run_sync(
            user_secrets.open_values, plane.engine, plane.sealer, session.owner, names
        )
    except user_secrets.MissingSecretError as exc:
        raise ApiError(404, str(exc)) from exc
    # The owner, as agent-credentials gives it: the node checks the session is the one it
    # runs before the agent gets the values.
    answer = {"values": values, "owner": session.owner}
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
        "/api/nodes/{node_id}/sessions/{session_id}/mcp-secrets",
        mcp_secrets,
        methods=["POST"],
    ),
    Route(
        "/api/nodes/{node_id}/sessions/{session_id}/details",
        session_details,
        methods=["POST"],
    ),
]
