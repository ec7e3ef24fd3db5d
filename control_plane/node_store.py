"""Storage for what nodes report: readiness, heartbeats, events, session bindings.

Synchronous SQLAlchemy Core; the HTTP layer calls these in worker threads.
Portable SQL only: "insert or ignore" is a select of existing keys plus an insert,
retried if a concurrent writer wins the unique constraint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from control_plane.db import node_events, nodes, session_bindings

_MAX_INSERT_ATTEMPTS = 3


@dataclass(frozen=True)
class NodeEvent:
    session_id: str
    seq: int
    ts: float
    type: str
    data: Any


@dataclass(frozen=True)
class IngestResult:
    stored: int
    duplicates: int


def _upsert_node(engine: Engine, node_id: str, values: dict[str, Any]) -> None:
    for _ in range(_MAX_INSERT_ATTEMPTS):
        try:
            with engine.begin() as conn:
                found = conn.execute(
                    update(nodes).where(nodes.c.node_id == node_id).values(**values)
                ).rowcount
                if not found:
                    conn.execute(insert(nodes).values(node_id=node_id, **values))
            return
        except IntegrityError:
            continue  # a concurrent first call inserted the row; update it now
    raise RuntimeError(f"could not record node {node_id}")


def record_ready(engine: Engine, node_id: str, version: str, capacity: Any, now: float) -> None:
    _upsert_node(engine, node_id, {"version": version, "capacity": capacity, "ready_at": now})


def record_heartbeat(
    engine: Engine, node_id: str, sessions: list[Any], usage: Any, now: float
) -> None:
    values = {"sessions": sessions, "usage": usage, "last_heartbeat_at": now}
    _upsert_node(engine, node_id, values)


def get_node(engine: Engine, node_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(nodes).where(nodes.c.node_id == node_id)).mappings().first()
    return dict(row) if row else None


_KEYS_PER_QUERY = 400  # stay far below any database's bound-parameter limit


def _existing_keys(
    conn: Connection, node_id: str, keys: list[tuple[str, int]]
) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    pair = tuple_(node_events.c.session_id, node_events.c.seq)
    for i in range(0, len(keys), _KEYS_PER_QUERY):
        query = select(node_events.c.session_id, node_events.c.seq).where(
            node_events.c.node_id == node_id, pair.in_(keys[i : i + _KEYS_PER_QUERY])
        )
        found.update((sid, seq) for sid, seq in conn.execute(query).all())
    return found


def store_events(
    engine: Engine, node_id: str, events: Sequence[NodeEvent], now: float
) -> IngestResult:
    """Store each (node, session, seq) once; repeats (in the batch or earlier) are counted."""
    unique: dict[tuple[str, int], NodeEvent] = {}
    for ev in events:
        unique.setdefault((ev.session_id, ev.seq), ev)
    if not unique:
        return IngestResult(0, len(events))
    for _ in range(_MAX_INSERT_ATTEMPTS):
        try:
            with engine.begin() as conn:
                existing = _existing_keys(conn, node_id, list(unique))
                new = [ev for key, ev in unique.items() if key not in existing]
                if new:
                    conn.execute(
                        insert(node_events),
                        [
                            {
                                "node_id": node_id,
                                "session_id": ev.session_id,
                                "seq": ev.seq,
                                "ts": ev.ts,
                                "type": ev.type,
                                "data": ev.data,
                                "received_at": now,
                            }
                            for ev in new
                        ],
                    )
            return IngestResult(stored=len(new), duplicates=len(events) - len(new))
        except IntegrityError:
            continue  # a concurrent batch stored some of these; look again
    raise RuntimeError(f"could not store events for node {node_id}")


def list_events(engine: Engine, node_id: str, session_id: str | None) -> list[dict[str, Any]]:
    query = select(
        node_events.c.session_id,
        node_events.c.seq,
        node_events.c.ts,
        node_events.c.type,
        node_events.c.data,
    ).where(node_events.c.node_id == node_id)
    if session_id is not None:
        query = query.where(node_events.c.session_id == session_id)
    query = query.order_by(node_events.c.session_id, node_events.c.seq)
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def bind_session(engine: Engine, session_id: str, node_id: str, now: float) -> str:
    """Bind `session_id` to the first node that asks; returns the node it is bound to."""
    for _ in range(_MAX_INSERT_ATTEMPTS):
        with engine.connect() as conn:
            bound = conn.execute(
                select(session_bindings.c.node_id).where(
                    session_bindings.c.session_id == session_id
                )
            ).scalar_one_or_none()
        if bound is not None:
            return str(bound)
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(session_bindings).values(
                        session_id=session_id, node_id=node_id, bound_at=now
                    )
                )
            return node_id
        except IntegrityError:
            continue  # another node bound it first; read who
    raise RuntimeError(f"could not bind session {session_id}")
