"""The lifecycle loop's rows (``node_machines``): made from placement's asks, claimed with a
lease, each step recorded only by the replica that holds the lease.

Claiming: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two replicas never take
the same row in one pass; on SQLite an UPDATE guarded by the row's version (SQLite has one
writer at a time, so the guard is the whole race).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, update

from control_plane.storage.db import (
    is_postgres,
    node_machines,
    node_requests,
    nodes,
    placement_lock,
    workspaces,
)

GONE = "gone"
PENDING = "pending"  # node_requests.state while placement may still put tasks there
RETIRED = "retired"  # node_requests.state once its node drains, is deleted or failed
BUSY_STATES = {"starting", "prompting", "cancelling", "recovering"}
# The heartbeat's activity counts (docs/callback-api.md); any above 0 is work on the node.
ACTIVITY_KEYS = ("turns", "permissions", "terminals", "background")
DRAINING_PHASES = ("draining", "deleting", GONE)


@dataclass(frozen=True, slots=True)
class Machine:
    node_id: str
    provider: str
    size: str
    owner: str
    phase: str
    reason: str | None
    provider_id: str | None
    requested_at: float
    create_sent_at: float | None
    delete_sent_at: float | None
    drain_started_at: float | None
    ready_at: float | None
    retry_not_before: float | None
    failures: int
    version: int

    @classmethod
    def of(cls, row: Any) -> Machine:
        return cls(**{name: row[name] for name in cls.__slots__})


@dataclass(frozen=True, slots=True)
class Reported:
    """What the node itself said and what the control plane has on it."""

    ready_at: float | None
    last_heard_at: float | None
    busy: bool  # a session starting, prompting, cancelling or recovering; or any activity
    open_workspaces: int
    last_released_at: float | None
    drained: bool = False  # the last heartbeat said: draining, nothing runs


def reported_work(sessions: Any, usage: Any) -> bool:
    """Whether a heartbeat (its sessions and the activity stored with its usage) says
    anything runs on the node. Unknown shapes count as nothing (a daemon from before
    activity reports sends none; the lifecycle still has the node's open tasks)."""
    if any(isinstance(s, dict) and s.get("state") in BUSY_STATES for s in sessions or []):
        return True
    activity = usage.get("activity") if isinstance(usage, dict) else None
    if not isinstance(activity, dict):
        return False
    return any(
        isinstance(n, int) and not isinstance(n, bool) and n > 0
        for n in (activity.get(k) for k in ACTIVITY_KEYS)
    )


def adopt_requests(engine: Engine, now: float) -> int:
    """A row for every node placement asked for that has none yet (phase ``requested``)."""
    with engine.begin() as conn:
        missing = conn.execute(
            select(
                node_requests.c.node_id,
                node_requests.c.provider,
                node_requests.c.size,
                node_requests.c.created_at,
                workspaces.c.owner,
            )
            .select_from(
                node_requests.outerjoin(
                    workspaces, workspaces.c.workspace_id == node_requests.c.workspace_id
                )
            )
            .where(node_requests.c.state == PENDING)
            .where(~node_requests.c.node_id.in_(select(node_machines.c.node_id)))
        ).all()
        for node_id, provider, size, created_at, owner in missing:
            conn.execute(
                insert(node_machines).values(
                    node_id=node_id,
                    provider=provider,
                    size=size,
                    owner=owner or "",
                    phase="requested",
                    requested_at=created_at or now,
                    failures=0,
                    version=0,
                )
            )
    return len(missing)


def adopt_existing(engine: Engine, node_id: str, provider: str, owner: str, now: float) -> None:
    """A row for a node that exists already (``vm-agent dev``'s daemon), as if its create
    had been sent just now: the lifecycle looks for it by its labels and adopts it. Made
    afresh each time (a dev command started again starts its daemon again)."""
    with engine.begin() as conn:
        conn.execute(node_machines.delete().where(node_machines.c.node_id == node_id))
        conn.execute(
            insert(node_machines).values(
                node_id=node_id,
                provider=provider,
                size="existing",
                owner=owner,
                phase="creating",
                requested_at=now,
                create_sent_at=now,
                failures=0,
                version=0,
            )
        )


def claim(engine: Engine, holder: str, now: float, lease_s: float, limit: int) -> list[Machine]:
    """Rows whose lease is free, now leased to ``holder`` until ``now + lease_s``."""
    free = or_(node_machines.c.lease_until.is_(None), node_machines.c.lease_until < now)
    due = and_(node_machines.c.phase != GONE, free)
    lease = {"lease_owner": holder, "lease_until": now + lease_s}
    with engine.begin() as conn:
        if is_postgres(engine):
            rows = conn.execute(
                select(node_machines).where(due).limit(limit).with_for_update(skip_locked=True)
            ).mappings().all()  # fmt: skip
            for row in rows:
                conn.execute(
                    update(node_machines)
                    .where(node_machines.c.node_id == row["node_id"])
                    .values(**lease, version=row["version"] + 1)
                )
            return [Machine.of({**row, "version": row["version"] + 1}) for row in rows]
        rows = conn.execute(select(node_machines).where(due).limit(limit)).mappings().all()
        taken = []
        for row in rows:
            won = conn.execute(
                update(node_machines)
                .where(node_machines.c.node_id == row["node_id"])
                .where(node_machines.c.version == row["version"])
                .where(free)
                .values(**lease, version=row["version"] + 1)
            )
            if won.rowcount == 1:
                taken.append(Machine.of({**row, "version": row["version"] + 1}))
        return taken


def record(engine: Engine, machine: Machine, holder: str, **values: Any) -> bool:
    """Writes ``values`` if ``holder`` still holds the row's lease; False if it lost it."""
    with engine.begin() as conn:
        done = _update_leased(conn, machine.node_id, holder, **values)
        if values.get("phase") in DRAINING_PHASES:
            _retire(conn, machine.node_id)
    return done


def _update_leased(conn: Connection, node_id: str, holder: str, **values: Any) -> bool:
    """``values`` written (the version bumped) if ``holder`` holds the row's lease."""
    done = conn.execute(
        update(node_machines)
        .where(node_machines.c.node_id == node_id)
        .where(node_machines.c.lease_owner == holder)
        .values(**values, version=node_machines.c.version + 1)
    )
    return done.rowcount == 1


def take_placement_lock(conn: Connection) -> None:
    """Held until `conn`'s transaction ends: a row lock on PostgreSQL, the write lock on
    SQLite. Placement takes it before reading what it decides on; a drain before it checks
    that the node is still idle."""
    conn.execute(
        update(placement_lock)
        .where(placement_lock.c.id == 1)
        .values(placements=placement_lock.c.placements + 1)
    )


def record_drain(
    engine: Engine, machine: Machine, holder: str, now: float, *, reason: str,
    idle_since: float | None,
) -> bool:  # fmt: skip
    """DRAINING, unless placement put a task on the node after the facts were read (one
    active there, or one that came and went: its release is later than `idle_since`).
    Under placement's lock, so a placement comes either before (the drain sees its task
    and loses) or after (it passes over a draining node): never a task on a node that
    refuses it. False when the node stays as it was."""
    w = workspaces.c
    with engine.begin() as conn:
        take_placement_lock(conn)
        placed = conn.execute(
            select(func.count()).where(w.node_id == machine.node_id).where(w.state == "active")
        ).scalar_one()
        released = conn.execute(
            select(func.max(w.released_at)).where(w.node_id == machine.node_id)
        ).scalar()
        if placed or (released is not None and (idle_since is None or released > idle_since)):
            return False
        done = _update_leased(
            conn, machine.node_id, holder, phase="draining", reason=reason, drain_started_at=now
        )
        if done:
            _retire(conn, machine.node_id)
    return done


def release(engine: Engine, node_id: str, holder: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(node_machines)
            .where(node_machines.c.node_id == node_id)
            .where(node_machines.c.lease_owner == holder)
            .values(lease_owner=None, lease_until=None)
        )


def _retire(conn: Connection, node_id: str) -> None:
    # placement must not put a new task on a node that drains or goes away
    conn.execute(
        update(node_requests).where(node_requests.c.node_id == node_id).values(state=RETIRED)
    )


def live_node_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        found = conn.execute(select(node_machines.c.node_id).where(node_machines.c.phase != GONE))
        return {str(n) for n in found.scalars()}


def retired_node_ids(conn: Connection) -> set[str]:
    """Nodes placement passes over: draining, deleting or gone."""
    found = conn.execute(
        select(node_machines.c.node_id).where(node_machines.c.phase.in_(DRAINING_PHASES))
    )
    return {str(n) for n in found.scalars()}


def told_to_drain(engine: Engine, node_id: str) -> bool:
    """Whether the node is to drain (the heartbeat's answer says so): its lifecycle row
    drains or goes away. A node without a row (a dev node, one made by hand) never is."""
    with engine.connect() as conn:
        phase = conn.execute(
            select(node_machines.c.phase).where(node_machines.c.node_id == node_id)
        ).scalar()
    return phase in DRAINING_PHASES


def reported(engine: Engine, node_ids: Iterable[str]) -> dict[str, Reported]:
    ids = list(node_ids)
    with engine.connect() as conn:
        seen = {
            row["node_id"]: row
            for row in conn.execute(select(nodes).where(nodes.c.node_id.in_(ids))).mappings()
        }
        open_counts: dict[str, int] = {
            str(node): int(count)
            for node, count in conn.execute(
                select(workspaces.c.node_id, func.count())
                .where(workspaces.c.node_id.in_(ids))
                .where(workspaces.c.state == "active")
                .group_by(workspaces.c.node_id)
            ).all()
        }
        released: dict[str, float | None] = {
            str(node): (None if when is None else float(when))
            for node, when in conn.execute(
                select(workspaces.c.node_id, func.max(workspaces.c.released_at))
                .where(workspaces.c.node_id.in_(ids))
                .group_by(workspaces.c.node_id)
            ).all()
        }
    out = {}
    for node_id in ids:
        row = seen.get(node_id)
        sessions = (row["sessions"] if row is not None else None) or []
        usage = row["usage"] if row is not None else None
        out[node_id] = Reported(
            ready_at=None if row is None else row["ready_at"],
            last_heard_at=None if row is None else (row["last_heartbeat_at"] or row["ready_at"]),
            busy=reported_work(sessions, usage),
            open_workspaces=int(open_counts.get(node_id, 0)),
            last_released_at=released.get(node_id),
            drained=isinstance(usage, dict) and usage.get("drained") is True,
        )
    return out


def owners_and_providers(engine: Engine) -> list[tuple[str, str]]:
    """Every (owner, provider) a node was ever asked for under (whose accounts to sweep)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(node_machines.c.owner, node_machines.c.provider).distinct()
        ).all()
    return [(str(owner), str(provider)) for owner, provider in rows]
