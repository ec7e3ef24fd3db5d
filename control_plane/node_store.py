"""Storage for what nodes report: readiness, heartbeats, events.

Synchronous SQLAlchemy Core; the HTTP layer calls these in worker threads. Events are
stored with `INSERT ... ON CONFLICT DO NOTHING RETURNING`, which SQLite and PostgreSQL
spell alike: each (node, session, seq) once, whichever replica or concurrent batch gets
there first, and the rows returned are exactly the ones this batch stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Insert, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from control_plane.db import is_postgres, node_events, nodes

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


# Rows per INSERT statement: far below any database's bound-parameter limit (8 columns).
_ROWS_PER_STATEMENT = 500


def _insert_new_events(engine: Engine) -> Insert:
    dialect_insert = postgresql.insert if is_postgres(engine) else sqlite.insert
    return (
        dialect_insert(node_events)
        .on_conflict_do_nothing(index_elements=["node_id", "session_id", "seq"])
        .returning(node_events.c.session_id)
    )


def store_events(
    engine: Engine, node_id: str, events: Sequence[NodeEvent], now: float
) -> IngestResult:
    """Store each (node, session, seq) once; repeats (in the batch or earlier) are counted."""
    unique: dict[tuple[str, int], NodeEvent] = {}
    for ev in events:
        unique.setdefault((ev.session_id, ev.seq), ev)
    # In key order: concurrent batches that overlap wait on each other's rows in one order
    # (PostgreSQL), so they cannot deadlock; each session's events keep their seq order.
    rows = [
        {
            "node_id": node_id,
            "session_id": ev.session_id,
            "seq": ev.seq,
            "ts": ev.ts,
            "type": ev.type,
            "data": ev.data,
            "received_at": now,
        }
        for _, ev in sorted(unique.items())
    ]
    stored = 0
    statement = _insert_new_events(engine)
    with engine.begin() as conn:
        for i in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[i : i + _ROWS_PER_STATEMENT]
            stored += len(conn.execute(statement.values(chunk)).all())
    return IngestResult(stored=stored, duplicates=len(events) - stored)


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
