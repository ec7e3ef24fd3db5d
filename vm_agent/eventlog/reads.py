"""Reads of the log, each in one read transaction (a consistent snapshot)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator
from contextlib import contextmanager

from .model import Event, EventsDropped, SessionRecord


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _available(conn: sqlite3.Connection, session_id: str, after_seq: int) -> bool:
    """Whether the session has events; raises if some after `after_seq` were dropped."""
    row = conn.execute(
        "SELECT first_seq FROM streams WHERE session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        return False
    if after_seq + 1 < row[0]:
        raise EventsDropped(session_id, after_seq, row[0])
    return True


def read_session(
    conn: sqlite3.Connection, session_id: str, after_seq: int, limit: int
) -> list[Event]:
    """Events of one session with seq > after_seq, oldest first, at most `limit`.

    Raises EventsDropped when retention removed events the reader asked for.
    """
    with _snapshot(conn):
        if not _available(conn, session_id, after_seq):
            return []
        rows = conn.execute(
            "SELECT id, session_id, seq, ts, type, payload FROM events "
            "WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (session_id, after_seq, limit),
        ).fetchall()
    return list(map(Event._make, rows))


def read_payloads(
    conn: sqlite3.Connection, session_id: str, after_seq: int, limit: int
) -> list[str]:
    """The fast path of `read_session`: payloads only, for sending as they are.

    A session's stored seqs are contiguous (retention drops only the oldest),
    so the i-th payload has seq `after_seq + 1 + i`.
    """
    with _snapshot(conn):
        if not _available(conn, session_id, after_seq):
            return []
        rows = conn.execute(
            "SELECT payload FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (session_id, after_seq, limit),
        ).fetchall()
    return [payload for (payload,) in rows]


def read_global(
    conn: sqlite3.Connection,
    after_rowid: int,
    limit: int,
    max_bytes: int,
    types: Collection[str] | None,
) -> tuple[list[Event], int]:
    """Events of every session with rowid > after_rowid in append order.

    Bounded by `limit` events and `max_bytes` of payload (at least one event
    is returned when any is there, however large). The second value is the
    position a cursor may move to: every matching event up to it is in the
    list, so events filtered out by `types` are passed over too.
    """
    sql = "SELECT id, session_id, seq, ts, type, payload, size FROM events WHERE id > ? AND id <= ?"
    params: list[object] = []
    if types is not None:
        wanted = sorted(types)
        if not wanted:
            sql += " AND 0"
        else:
            sql += f" AND type IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
    sql += " ORDER BY id LIMIT ?"
    events: list[Event] = []
    with _snapshot(conn):
        top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        max_id = top[0] if top else 0
        total = 0
        full = False
        cur = conn.execute(sql, (after_rowid, max_id, *params, limit))
        for rid, sid, seq, ts, typ, payload, size in cur:
            if events and total + size > max_bytes:
                full = True
                break
            events.append(Event(rid, sid, seq, ts, typ, payload))
            total += size
        cur.close()
    if full or len(events) >= limit:
        return events, events[-1].rowid
    return events, max(after_rowid, max_id)


def _record(row: tuple[object, ...]) -> SessionRecord:
    sid, agent, cwd, acp, state, created, updated, meta, head, first = row
    return SessionRecord(
        session_id=str(sid),
        agent=str(agent),
        cwd=str(cwd),
        state=str(state),
        acp_session_id=None if acp is None else str(acp),
        created_at=float(created),  # type: ignore[arg-type]
        updated_at=float(updated),  # type: ignore[arg-type]
        metadata=json.loads(str(meta)),
        head_seq=int(head),  # type: ignore[call-overload]
        first_seq=int(first),  # type: ignore[call-overload]
    )


_SESSIONS = (
    "SELECT s.session_id, s.agent, s.cwd, s.acp_session_id, s.state, s.created_at, "
    "s.updated_at, s.metadata, COALESCE(t.head_seq, 0), COALESCE(t.first_seq, 1) "
    "FROM sessions s LEFT JOIN streams t ON t.session_id = s.session_id"
)


def get_session(conn: sqlite3.Connection, session_id: str) -> SessionRecord | None:
    row = conn.execute(_SESSIONS + " WHERE s.session_id = ?", (session_id,)).fetchone()
    return None if row is None else _record(row)


def list_sessions(conn: sqlite3.Connection) -> list[SessionRecord]:
    rows = conn.execute(_SESSIONS + " ORDER BY s.created_at, s.session_id").fetchall()
    return [_record(row) for row in rows]


def stream_bounds(conn: sqlite3.Connection, session_id: str) -> tuple[int, int, int]:
    """(first_seq, head_seq, dropped) of a session; (1, 0, 0) when it has none."""
    row = conn.execute(
        "SELECT first_seq, head_seq, dropped FROM streams WHERE session_id = ?", (session_id,)
    ).fetchone()
    return (1, 0, 0) if row is None else (row[0], row[1], row[2])
