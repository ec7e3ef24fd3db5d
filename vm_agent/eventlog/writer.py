"""The single writer: commits batches of events and registry changes.

Runs in a worker thread and owns its connection; one batch is one
transaction (group commit), so many appenders share one commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .model import Event, SessionRecord
from .retention import plan_trim


@dataclass(frozen=True, slots=True)
class PendingEvent:
    session_id: str
    seq: int
    ts: float
    type: str
    payload: str
    size: int


# A registry or cursor change, applied in order with the events around it.
PendingOp = Callable[["Writer"], object]


class Writer:
    def __init__(self, conn: sqlite3.Connection, retention_bytes: int) -> None:
        self.conn = conn
        self.retention_bytes = retention_bytes
        self._bytes: dict[str, int] = {}
        self._heads: dict[str, int] = {}
        for sid, head, size in conn.execute("SELECT session_id, head_seq, bytes FROM streams"):
            self._heads[sid] = head
            self._bytes[sid] = size
        self.cursors: dict[str, int] = dict(conn.execute("SELECT name, position FROM cursors"))
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        self._next_id = (row[0] if row else 0) + 1
        self.last_batch_bytes = 0  # event payload bytes of the last committed batch

    def heads(self) -> dict[str, int]:
        return dict(self._heads)

    def write_batch(self, items: Sequence[PendingEvent | PendingOp]) -> list[object]:
        """Apply `items` in order in one transaction; results align with items."""
        results: list[object] = []
        rows: list[tuple[int, str, int, float, str, int, str]] = []
        touched: dict[str, tuple[int, int]] = {}  # session -> (head, bytes added)
        next_id = self._next_id
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                if isinstance(item, PendingEvent):
                    rows.append(
                        (
                            next_id,
                            item.session_id,
                            item.seq,
                            item.ts,
                            item.type,
                            item.size,
                            item.payload,
                        )
                    )
                    results.append(
                        Event(next_id, item.session_id, item.seq, item.ts, item.type, item.payload)
                    )
                    next_id += 1
                    _, added = touched.get(item.session_id, (0, 0))
                    touched[item.session_id] = (item.seq, added + item.size)
                else:
                    self._insert(rows)
                    results.append(item(self))
            self._insert(rows)
            self._update_streams(touched)
            self._enforce_retention(touched)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._reload()
            raise
        self._next_id = next_id
        self.last_batch_bytes = sum(added for _, added in touched.values())
        return results

    def _insert(self, rows: list[tuple[int, str, int, float, str, int, str]]) -> None:
        if rows:
            self.conn.executemany(
                "INSERT INTO events (id, session_id, seq, ts, type, size, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            rows.clear()

    def _update_streams(self, touched: dict[str, tuple[int, int]]) -> None:
        for sid, (head, added) in touched.items():
            self.conn.execute(
                "INSERT INTO streams (session_id, head_seq, first_seq, bytes, dropped) "
                "VALUES (?, ?, 1, ?, 0) ON CONFLICT (session_id) DO UPDATE SET "
                "head_seq = excluded.head_seq, bytes = bytes + excluded.bytes",
                (sid, head, added),
            )
            self._heads[sid] = head
            self._bytes[sid] = self._bytes.get(sid, 0) + added

    def _enforce_retention(self, sessions: Iterable[str]) -> None:
        floor = min(self.cursors.values()) if self.cursors else None
        for sid in sessions:
            total = self._bytes[sid]
            if total <= self.retention_bytes:
                continue
            rows = self.conn.execute(
                "SELECT id, seq, size FROM events WHERE session_id = ? ORDER BY seq", (sid,)
            )
            trim = plan_trim(rows, total, self.retention_bytes, self._heads[sid], floor)
            rows.close()
            if trim is None:
                continue
            self.conn.execute(
                "DELETE FROM events WHERE session_id = ? AND seq <= ?", (sid, trim.through_seq)
            )
            self.conn.execute(
                "UPDATE streams SET first_seq = ?, bytes = bytes - ?, dropped = dropped + ? "
                "WHERE session_id = ?",
                (trim.through_seq + 1, trim.freed, trim.count, sid),
            )
            self._bytes[sid] = total - trim.freed

    def _reload(self) -> None:
        # After a rollback the caches may be ahead of the database.
        fresh = Writer(self.conn, self.retention_bytes)
        self._bytes, self._heads = fresh._bytes, fresh._heads
        self.cursors, self._next_id = fresh.cursors, fresh._next_id

    # Ops (run inside a batch's transaction, in the writer thread).

    def upsert_session(self, record: SessionRecord) -> None:
        self.conn.execute(
            "INSERT INTO sessions (session_id, agent, cwd, acp_session_id, state, "
            "created_at, updated_at, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET agent = excluded.agent, "
            "cwd = excluded.cwd, acp_session_id = excluded.acp_session_id, "
            "state = excluded.state, updated_at = excluded.updated_at, "
            "metadata = excluded.metadata",
            (
                record.session_id,
                record.agent,
                record.cwd,
                record.acp_session_id,
                record.state,
                record.created_at,
                record.updated_at,
                json.dumps(record.metadata, separators=(",", ":")),
            ),
        )

    def register_cursor(self, name: str) -> int:
        position = self.cursors.get(name)
        if position is None:
            position = 0
            self.conn.execute("INSERT INTO cursors (name, position) VALUES (?, 0)", (name,))
            self.cursors[name] = 0
        return position

    def set_cursor(self, name: str, position: int) -> None:
        self.conn.execute(
            "INSERT INTO cursors (name, position) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (name, position),
        )
        self.cursors[name] = position
        self._release_held()

    def delete_cursor(self, name: str) -> None:
        self.conn.execute("DELETE FROM cursors WHERE name = ?", (name,))
        self.cursors.pop(name, None)
        self._release_held()

    def _release_held(self) -> None:
        # Events held for a cursor may be droppable once it moved or went.
        self._enforce_retention(
            [sid for sid, size in self._bytes.items() if size > self.retention_bytes]
        )


def metadata_from_json(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text)
    return value
