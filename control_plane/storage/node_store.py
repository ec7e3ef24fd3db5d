"""Storage for what nodes report: readiness, heartbeats, events.

Synchronous SQLAlchemy Core; the HTTP layer calls these in worker threads. Events are
stored with `INSERT ... ON CONFLICT DO NOTHING RETURNING`: each (node, session, seq)
once, whichever replica or concurrent batch gets there first, and the rows returned are
exactly the ones this batch stored. PostgreSQL gets the batch as one JSON document
(json_to_recordset), SQLite as multi-row VALUES.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from control_plane.storage.db import is_postgres, node_events, nodes

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


# Rows per INSERT statement on SQLite: far below its bound-parameter limit (7 columns).
_ROWS_PER_STATEMENT = 500

# PostgreSQL: the whole batch as one JSON document in one small statement, so the cost of
# a batch is its rows, not building and parsing a statement of 3,500 parameters.
_PG_INSERT = text(
    """
    INSERT INTO node_events (node_id, session_id, seq, ts, type, data, received_at)
    SELECT :node_id, e.session_id, e.seq, e.ts, e.type, CAST(e.data AS json), :now
    FROM ROWS FROM (
        json_to_recordset(CAST(:events AS json))
            AS (session_id text, seq bigint, ts float8, type text, data text)
    ) WITH ORDINALITY AS e(session_id, seq, ts, type, data, ord)
    ORDER BY e.ord
    ON CONFLICT (node_id, session_id, seq) DO NOTHING
    RETURNING 1
    """
)


def _finite(value: Any) -> Any:
    """`value` with NaN and the infinities as the strings Python spells them: PostgreSQL's
    json has no such numbers, and an event must not be refused for holding one."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _json_text(data: Any) -> str:
    # The standard library's encoder, as SQLAlchemy's JSON type writes `data` elsewhere.
    try:
        return json.dumps(data, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(data), allow_nan=False)


def _store_postgres(conn: Connection, node_id: str, evs: list[NodeEvent], now: float) -> int:
    # `data` travels as JSON text inside the document and is cast to json on its own:
    # json_to_recordset would decode it, refusing what json keeps (a lone surrogate).
    events = json.dumps(
        [
            {
                "session_id": e.session_id,
                "seq": e.seq,
                "ts": e.ts,
                "type": e.type,
                "data": _json_text(e.data),
            }
            for e in evs
        ]
    )
    params = {"node_id": node_id, "now": now, "events": events}
    return len(conn.execute(_PG_INSERT, params).all())


def _store_portable(conn: Connection, node_id: str, evs: list[NodeEvent], now: float) -> int:
    statement = (
        sqlite.insert(node_events)
        .on_conflict_do_nothing(index_elements=["node_id", "session_id", "seq"])
        .returning(node_events.c.session_id)
    )
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
        for ev in evs
    ]
    stored = 0
    for i in range(0, len(rows), _ROWS_PER_STATEMENT):
        # An executemany: one compiled statement (cached), which SQLAlchemy sends as
        # multi-row VALUES ("insertmanyvalues"), RETURNING the rows it stored.
        stored += len(conn.execute(statement, rows[i : i + _ROWS_PER_STATEMENT]).all())
    return stored


def store_events(
    engine: Engine, node_id: str, events: Sequence[NodeEvent], now: float
) -> IngestResult:
    """Store each (node, session, seq) once; repeats (in the batch or earlier) are counted."""
    unique: dict[tuple[str, int], NodeEvent] = {}
    for ev in events:
        unique.setdefault((ev.session_id, ev.seq), ev)
    # In key order: concurrent batches that overlap wait on each other's rows in one order
    # (PostgreSQL), so they cannot deadlock; each session's events keep their seq order.
    ordered = [ev for _, ev in sorted(unique.items())]
    store = _store_postgres if is_postgres(engine) else _store_portable
    with engine.begin() as conn:
        stored = store(conn, node_id, ordered, now) if ordered else 0
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
