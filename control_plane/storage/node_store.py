"""Storage for what nodes report: readiness, heartbeats, events.

Synchronous SQLAlchemy Core; the HTTP layer calls these in worker threads. Events are
stored with `INSERT ... ON CONFLICT DO NOTHING RETURNING`: each (node, session, seq)
once, whichever replica or concurrent batch gets there first, and the rows returned are
exactly the ones this batch stored. PostgreSQL gets the batch as one JSON document
(json_to_recordset), SQLite as multi-row VALUES.

A node's events are bounded in total: `node_event_bytes` counts what they take (added
in the transaction that stores them), and a batch that would take it past the bound is
refused whole (NodeEventQuotaError; nothing of it stays). The admin list pages by a
cursor, and what it returns (like `get_node`) is always JSON: a NaN stored before the
API refused it comes back as the string "NaN", not as a 500.
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

from control_plane.storage.db import is_postgres, node_event_bytes, node_events, nodes

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


class EventTooLargeError(Exception):
    """An event's data is longer than the bound (`index`: its place in the batch)."""

    def __init__(self, index: int, size: int, limit: int) -> None:
        super().__init__(f"events.{index}.data: {size} bytes, more than {limit}")
        self.index = index
        self.limit = limit


class NodeEventQuotaError(Exception):
    """Storing the batch would take the node's events past their bound."""

    def __init__(self, node_id: str, total: int, limit: int) -> None:
        super().__init__(
            f"node {node_id}'s events would take {total} bytes, past the bound of {limit}"
        )
        self.total = total
        self.limit = limit


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
    """What the node reported, and what its stored events take (`event_bytes`)."""
    used = node_event_bytes
    with engine.connect() as conn:
        row = conn.execute(select(nodes).where(nodes.c.node_id == node_id)).mappings().first()
        if row is None:
            return None
        taken = conn.execute(select(used.c.event_bytes).where(used.c.node_id == node_id))
        event_bytes = taken.scalar() or 0
    return {**finite_json(dict(row)), "event_bytes": event_bytes}


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
    RETURNING session_id, seq
    """
)


def finite_json(value: Any) -> Any:
    """`value` with NaN and the infinities as the strings Python spells them: JSON (and
    PostgreSQL's json) has no such numbers. The API refuses them now; rows stored before
    that may hold them, and reading them must not fail."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    return value


def _json_text(data: Any) -> str:
    # The standard library's encoder, as SQLAlchemy's JSON type writes `data` elsewhere.
    try:
        return json.dumps(data, allow_nan=False)
    except ValueError:
        return json.dumps(finite_json(data), allow_nan=False)


def event_size(ev: NodeEvent) -> int:
    """What an event counts against its node's bound: its data as JSON text, its type and
    session id (characters, as the migration that counted earlier events measured them)."""
    return len(_json_text(ev.data)) + len(ev.type) + len(ev.session_id)


Key = tuple[str, int]


def _store_postgres(
    conn: Connection, node_id: str, evs: list[NodeEvent], now: float, texts: dict[Key, str]
) -> list[Key]:
    # `data` travels as JSON text inside the document and is cast to json on its own:
    # json_to_recordset would decode it, refusing what json keeps (a lone surrogate).
    events = json.dumps(
        [
            {
                "session_id": e.session_id,
                "seq": e.seq,
                "ts": e.ts,
                "type": e.type,
                "data": texts[(e.session_id, e.seq)],
            }
            for e in evs
        ]
    )
    params = {"node_id": node_id, "now": now, "events": events}
    return [(r[0], r[1]) for r in conn.execute(_PG_INSERT, params)]


def _store_portable(
    conn: Connection, node_id: str, evs: list[NodeEvent], now: float, _texts: dict[Key, str]
) -> list[Key]:
    statement = (
        sqlite.insert(node_events)
        .on_conflict_do_nothing(index_elements=["node_id", "session_id", "seq"])
        .returning(node_events.c.session_id, node_events.c.seq)
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
    stored: list[Key] = []
    for i in range(0, len(rows), _ROWS_PER_STATEMENT):
        # An executemany: one compiled statement (cached), which SQLAlchemy sends as
        # multi-row VALUES ("insertmanyvalues"), RETURNING the rows it stored.
        part = conn.execute(statement, rows[i : i + _ROWS_PER_STATEMENT])
        stored += [(r[0], r[1]) for r in part]
    return stored


def _count_bytes(conn: Connection, node_id: str, added: int) -> int:
    """Adds `added` to the node's event bytes (making its row if it has none); the total."""
    used = node_event_bytes
    total = conn.execute(
        update(used)
        .where(used.c.node_id == node_id)
        .values(event_bytes=used.c.event_bytes + added)
        .returning(used.c.event_bytes)
    ).scalar()
    if total is None:  # its first events; a concurrent first insert retries the batch
        conn.execute(insert(used).values(node_id=node_id, event_bytes=added))
        total = added
    return int(total)


def store_events(
    engine: Engine,
    node_id: str,
    events: Sequence[NodeEvent],
    now: float,
    *,
    max_data_bytes: int | None = None,
    max_node_bytes: int | None = None,
) -> IngestResult:
    """Store each (node, session, seq) once; repeats (in the batch or earlier) are counted.
    Stores nothing and raises EventTooLargeError if an event's data (as JSON text) is
    longer than `max_data_bytes`, NodeEventQuotaError if the node's events would take more
    than `max_node_bytes`."""
    unique: dict[Key, NodeEvent] = {}
    texts: dict[Key, str] = {}
    for i, ev in enumerate(events):
        key = (ev.session_id, ev.seq)
        text = _json_text(ev.data)  # once: for the bound, the count and PostgreSQL's doc
        if max_data_bytes is not None and len(text) > max_data_bytes:
            raise EventTooLargeError(i, len(text), max_data_bytes)
        if key not in unique:
            unique[key], texts[key] = ev, text
    # In key order: concurrent batches that overlap wait on each other's rows in one order
    # (PostgreSQL), so they cannot deadlock; each session's events keep their seq order.
    ordered = [ev for _, ev in sorted(unique.items())]
    if not ordered:
        return IngestResult(stored=0, duplicates=0)
    store = _store_postgres if is_postgres(engine) else _store_portable
    for attempt in range(_MAX_INSERT_ATTEMPTS):
        try:
            with engine.begin() as conn:
                keys = store(conn, node_id, ordered, now, texts)
                if keys:
                    added = sum(len(texts[k]) + len(k[0]) + len(unique[k].type) for k in keys)
                    total = _count_bytes(conn, node_id, added)
                    if max_node_bytes is not None and total > max_node_bytes:
                        raise NodeEventQuotaError(node_id, total, max_node_bytes)  # rollback
            return IngestResult(stored=len(keys), duplicates=len(events) - len(keys))
        except IntegrityError:
            if attempt == _MAX_INSERT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


# The admin list's page: at most this many events, however many are asked for.
MAX_EVENTS_PAGE = 5000


@dataclass(frozen=True)
class EventCursor:
    """Where a page ended: the last (session, seq) returned, in the list's order."""

    session_id: str
    seq: int

    def to_text(self) -> str:
        return f"{self.seq}.{self.session_id}"

    @classmethod
    def parse(cls, text: str) -> EventCursor:
        seq, dot, session_id = text.partition(".")
        if not dot or not seq.isascii() or not seq.isdigit() or len(seq) > 19 or not session_id:
            raise ValueError("not a cursor this list returned")
        return cls(session_id, int(seq))


def list_events(
    engine: Engine,
    node_id: str,
    session_id: str | None,
    *,
    after: EventCursor | None = None,
    limit: int = MAX_EVENTS_PAGE,
) -> tuple[list[dict[str, Any]], EventCursor | None]:
    """A page of the node's events in (session, seq) order after `after`, and the cursor
    of the next page (None when this one reached the end)."""
    limit = max(1, min(limit, MAX_EVENTS_PAGE))
    sid, seq = node_events.c.session_id, node_events.c.seq
    query = select(sid, seq, node_events.c.ts, node_events.c.type, node_events.c.data).where(
        node_events.c.node_id == node_id
    )
    if session_id is not None:
        query = query.where(sid == session_id)
    if after is not None:
        query = query.where(
            (sid > after.session_id) | ((sid == after.session_id) & (seq > after.seq))
        )
    query = query.order_by(sid, seq).limit(limit + 1)
    with engine.connect() as conn:
        rows = [finite_json(dict(row)) for row in conn.execute(query).mappings()]
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], EventCursor(last["session_id"], last["seq"])
