"""Agent sessions the control plane made, and who may have an agent's credentials.

A session is made when a task is placed into a workspace on a node, or by a user's (or
an admin's) explicit call naming node and agent. A node is handed an agent's credentials
only for such a session, only if the session runs on that node, and only that session's
agent's (`credentials_refusal`, pure). Storage is synchronous SQLAlchemy Core.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from control_plane.storage.db import agent_sessions

# What the daemon accepts as a session id, and what its catalog names look like.
AGENT_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class AgentSession:
    session_id: str
    node_id: str
    agent: str
    owner: str
    workspace_id: str | None
    created_by: str
    created_at: float
    ended_at: float | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "nodeId": self.node_id,
            "agent": self.agent,
            "owner": self.owner,
            "workspaceId": self.workspace_id,
            "createdBy": self.created_by,
            "createdAt": self.created_at,
            "endedAt": self.ended_at,
        }


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def new_session_id() -> str:
    return f"s-{uuid.uuid4().hex}"


def credentials_refusal(
    session: AgentSession | None, session_id: str, node_id: str, agent: str
) -> Refusal | None:
    """Why `node_id` may not have `agent`'s credentials for `session_id`; None if it may."""
    if session is None:
        return Refusal(404, f"no such session: the control plane made no session {session_id!r}")
    if session.node_id != node_id:
        return Refusal(403, f"forbidden: session {session_id!r} runs on another node")
    if session.ended_at is not None:
        return Refusal(403, f"forbidden: session {session_id!r} has ended")
    if session.agent != agent:
        return Refusal(
            403, f"forbidden: session {session_id!r} runs agent {session.agent!r}, not {agent!r}"
        )
    return None


def insert_session(conn: Connection, session: AgentSession) -> None:
    conn.execute(
        insert(agent_sessions).values(
            session_id=session.session_id,
            node_id=session.node_id,
            agent=session.agent,
            owner=session.owner,
            workspace_id=session.workspace_id,
            created_by=session.created_by,
            created_at=session.created_at,
            ended_at=session.ended_at,
        )
    )


def make_session(engine: Engine, session: AgentSession) -> AgentSession:
    with engine.begin() as conn:
        insert_session(conn, session)
    return session


def get_session(engine: Engine, session_id: str) -> AgentSession | None:
    with engine.connect() as conn:
        row = (
            conn.execute(select(agent_sessions).where(agent_sessions.c.session_id == session_id))
            .mappings()
            .first()
        )
    return None if row is None else AgentSession(**dict(row))


def end_workspace_sessions(conn: Connection, workspace_id: str, now: float) -> None:
    conn.execute(
        update(agent_sessions)
        .where(agent_sessions.c.workspace_id == workspace_id, agent_sessions.c.ended_at.is_(None))
        .values(ended_at=now)
    )


@dataclass(frozen=True)
class WorkspaceFacts:
    """What deciding on a session in a workspace needs to know of it."""

    workspace_id: str
    owner: str
    node_id: str
    active: bool


def creation_refusal(
    *,
    actor: str,
    admin: bool,
    node_id: str,
    node_known: bool,
    workspace_id: str | None,
    workspace: WorkspaceFacts | None,
) -> Refusal | None:
    """Why `actor` may not make a session on `node_id`; None if they may. Pure.

    A user makes sessions in their own active workspaces, on the node each runs on; an
    admin also in anyone's, or on any known node without a workspace."""
    if workspace_id is None:
        if not admin:
            return Refusal(
                422, "workspaceId is required: a user's sessions run in their workspaces"
            )
        if not node_known:
            return Refusal(404, f"no such node {node_id!r}")
        return None
    if workspace is None or (not admin and workspace.owner != actor):
        # Another user's workspace answers as one that does not exist: nothing is told.
        return Refusal(404, f"no such workspace {workspace_id!r}")
    if workspace.node_id != node_id:
        return Refusal(
            422, f"workspace {workspace_id!r} runs on node {workspace.node_id!r}, not {node_id!r}"
        )
    if not workspace.active:
        return Refusal(409, f"workspace {workspace_id!r} was released")
    return None
