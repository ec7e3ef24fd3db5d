"""Workspaces: where a task runs (a node), with the audit of its demand and its placement.

Also what placement reads (the candidates: nodes, requested nodes, their tenants) and the
lock every placement takes first, so that placements of every replica take turns and two
of them never both count on the same free room. Synchronous SQLAlchemy Core.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from sqlalchemy import Connection, Engine, RowMapping, func, insert, select, update

from control_plane.demand.placement import (
    Candidate,
    Demand,
    NewNode,
    Tenant,
    new_node_option,
    node_capacity,
)
from control_plane.demand.quotas import Holding, Limits
from control_plane.demand.reservations import ResolvedResourceReservation
from control_plane.dispatch.sessions import end_workspace_sessions
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import (
    agent_sessions,
    node_requests,
    nodes,
    workspaces,
)
from control_plane.storage.machines import retired_node_ids, take_placement_lock

ACTIVE = "active"
RELEASED = "released"
PENDING = "pending"

_camel = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)


class DemandAudit(BaseModel):
    """What a task asked for and where it went: the audit columns of tasks and workspaces
    (the requested VM size and where it came from, the raw requirements, the resolved
    reservation with its provenance, the placement explanation), JSON as camelCase."""

    model_config = _camel

    provider: str
    requested_vm_size: str
    vm_size_source: str
    requirements: dict[str, Any] | None
    reservation: dict[str, Any]
    provenance: dict[str, Any]
    placement_explanation: dict[str, Any]

    def audit_columns(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "requested_vm_size": self.requested_vm_size,
            "vm_size_source": self.vm_size_source,
            "requirements_json": json.dumps(self.requirements),
            "reservation_json": json.dumps(self.reservation),
            "reservation_provenance_json": json.dumps(self.provenance),
            "placement_explanation_json": json.dumps(self.placement_explanation),
        }

    @staticmethod
    def audit_of(row: RowMapping) -> dict[str, Any]:
        """The audit fields from a stored row (tasks or workspaces)."""
        return {
            "provider": row["provider"],
            "requested_vm_size": row["requested_vm_size"],
            "vm_size_source": row["vm_size_source"],
            "requirements": json.loads(row["requirements_json"]),
            "reservation": json.loads(row["reservation_json"]),
            "provenance": json.loads(row["reservation_provenance_json"]),
            "placement_explanation": json.loads(row["placement_explanation_json"]),
        }


class WorkspaceRecord(DemandAudit):
    """A workspace as stored and as the API shows it."""

    workspace_id: str
    task_id: str
    owner: str
    node_id: str
    state: str
    created_at: float
    released_at: float | None = None
    # The project the task named: whose, and its id (for the project quotas).
    project_owner: str | None = None
    project_id: str | None = None


def _last_seen(row: RowMapping) -> float | None:
    seen = [t for t in (row["ready_at"], row["last_heartbeat_at"]) if t is not None]
    return max(seen) if seen else None


def load_candidates(conn: Connection) -> list[Candidate]:
    """Every node known or asked for, with its tenants (the active workspaces there)."""
    tenants: dict[str, list[Tenant]] = defaultdict(list)
    w = workspaces.c
    query = select(w.workspace_id, w.node_id, w.reservation_json, w.owner)
    for ws_id, node_id, reservation, owner in conn.execute(query.where(w.state == ACTIVE)):
        res = ResolvedResourceReservation.model_validate(json.loads(reservation))
        tenants[node_id].append(Tenant(ws_id, Demand.of(res), owner))
    out: list[Candidate] = []
    reported: set[str] = set()
    retired = retired_node_ids(conn)  # draining or going away: no new tasks there
    for row in conn.execute(select(nodes)).mappings():
        if row["node_id"] in retired:
            continue
        if row["ready_at"] is None and row["capacity"] is None:
            continue  # provisioned, never reported: its request (if any) stands for it
        reported.add(row["node_id"])
        capacity, problem = node_capacity(row["capacity"], row["usage"])
        out.append(
            Candidate(
                row["node_id"],
                capacity,
                problem,
                _last_seen(row),
                False,
                tuple(tenants[row["node_id"]]),
            )
        )
    asked = select(node_requests).where(node_requests.c.state == PENDING)
    for row in conn.execute(asked).mappings():
        if row["node_id"] in reported or row["node_id"] in retired:
            continue  # it reported: what it said counts, not the size it was asked for
        size = new_node_option(row["provider"], row["size"], "requested").capacity
        out.append(
            Candidate(row["node_id"], size, None, None, True, tuple(tenants[row["node_id"]]))
        )
    return out


def quota_limits(settings: ControlPlaneSettings) -> Limits:
    return Limits(
        user_nodes=settings.user_max_nodes,
        user_tasks=settings.user_max_tasks,
        user_sessions=settings.user_max_sessions,
        project_nodes=settings.project_max_nodes,
        project_tasks=settings.project_max_tasks,
    )


def _holding(conn: Connection, *where: Any) -> tuple[frozenset[str], int]:
    """The nodes and the count of the active workspaces matching `where`, with the nodes
    asked for on their behalf that have not reported yet (released or not: a request
    made stays counted until its node reports)."""
    w = workspaces.c
    active = conn.execute(select(w.node_id).where(w.state == ACTIVE, *where)).scalars().all()
    pending = conn.execute(
        select(node_requests.c.node_id)
        .join(workspaces, w.workspace_id == node_requests.c.workspace_id)
        .where(
            node_requests.c.state == PENDING,
            node_requests.c.node_id.not_in(select(nodes.c.node_id)),
            *where,
        )
    ).scalars()
    return frozenset(active) | frozenset(pending), len(active)


def user_holding(conn: Connection, owner: str) -> Holding:
    """What `owner` holds now (read under the placement lock: quotas count on it)."""
    held, tasks = _holding(conn, workspaces.c.owner == owner)
    s = agent_sessions.c
    open_sessions = conn.execute(
        select(func.count()).where(s.owner == owner, s.ended_at.is_(None))
    ).scalar_one()
    return Holding(held, tasks, int(open_sessions))


def project_holding(conn: Connection, project_owner: str, project_id: str) -> Holding:
    w = workspaces.c
    held, tasks = _holding(conn, w.project_owner == project_owner, w.project_id == project_id)
    return Holding(held, tasks)


def insert_node_request(
    conn: Connection, node_id: str, new_node: NewNode, workspace_id: str, now: float
) -> None:
    conn.execute(
        insert(node_requests).values(
            node_id=node_id,
            provider=new_node.provider,
            size=new_node.size,
            state=PENDING,
            workspace_id=workspace_id,
            created_at=now,
        )
    )


def insert_workspace(conn: Connection, ws: WorkspaceRecord) -> None:
    conn.execute(
        insert(workspaces).values(
            workspace_id=ws.workspace_id,
            task_id=ws.task_id,
            owner=ws.owner,
            node_id=ws.node_id,
            state=ws.state,
            created_at=ws.created_at,
            released_at=ws.released_at,
            project_owner=ws.project_owner,
            project_id=ws.project_id,
            **ws.audit_columns(),
        )
    )


def _record(row: RowMapping) -> WorkspaceRecord:
    return WorkspaceRecord(
        workspace_id=row["workspace_id"],
        task_id=row["task_id"],
        owner=row["owner"],
        node_id=row["node_id"],
        state=row["state"],
        created_at=row["created_at"],
        released_at=row["released_at"],
        project_owner=row["project_owner"],
        project_id=row["project_id"],
        **DemandAudit.audit_of(row),
    )


def get_workspace(conn: Connection, workspace_id: str) -> WorkspaceRecord | None:
    row = (
        conn.execute(select(workspaces).where(workspaces.c.workspace_id == workspace_id))
        .mappings()
        .first()
    )
    return None if row is None else _record(row)


def load_workspace(engine: Engine, workspace_id: str) -> WorkspaceRecord | None:
    with engine.connect() as conn:
        return get_workspace(conn, workspace_id)


def node_is_known(conn: Connection, node_id: str) -> bool:
    """A node that reported, or one that placement asked for."""
    for table in (nodes, node_requests):
        if conn.execute(select(table.c.node_id).where(table.c.node_id == node_id)).first():
            return True
    return False


def release_workspace(engine: Engine, workspace_id: str, now: float) -> WorkspaceRecord | None:
    """Mark it released (its room is free again) and end its agent sessions; idempotent."""
    with engine.begin() as conn:
        take_placement_lock(conn)
        ws = get_workspace(conn, workspace_id)
        if ws is None or ws.state == RELEASED:
            return ws
        conn.execute(
            update(workspaces)
            .where(workspaces.c.workspace_id == workspace_id)
            .values(state=RELEASED, released_at=now)
        )
        end_workspace_sessions(conn, workspace_id, now)
        return ws.model_copy(update={"state": RELEASED, "released_at": now})
