"""The async face of the event log: group-committed appends, threaded reads.

Durability point: `append` returns only after the transaction holding the
event has committed (group commit: every append that arrives while a commit
runs joins the next one, so concurrent appenders share a commit). With the
default `synchronous="NORMAL"` in WAL mode a committed event survives a crash
of the process (SIGKILL included) and the file is never corrupted; an OS crash
or power loss may roll back the last commits (never corrupt). Pass
`synchronous="FULL"` to fsync every commit and survive power loss as well.

Commit cadence: a commit starts at most every `commit_interval_s` (2 ms by default)
while appends keep coming, so many sessions streaming a little each share one commit
instead of paying one apiece; an append into an idle log commits at once (no added
latency), and a flood, whose commits take longer than the interval, is not slowed.
The pipeline itself (batches, cadence, failure) is `group_commit.GroupCommit`; this
module is the log's face: seqs, the registry, cursors, reads and listeners.

Seqs are assigned at the call of `append`, in call order, before the commit.
A task cancelled while awaiting its append does not withdraw the event: it is
committed with the batch (so seqs never have holes). If a commit fails the log
stops (`EventLogClosed` for every waiting and later append, the error is
raised by the `open` context): nothing of the failed batch was visible to
anyone, and a restarted daemon continues from the last committed seq.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

from . import reads, schema
from .checkpointer import Checkpointer
from .encode import encode_payload
from .group_commit import Appended, GroupCommit
from .model import Event, EventLogClosed, SessionRecord
from .readers import ReaderPool
from .writer import PendingEvent, PendingOp, Writer
from .writer_thread import WriterThread

log = logging.getLogger(__name__)

DEFAULT_RETENTION_BYTES = 64 * 1024 * 1024
DEFAULT_COMMIT_INTERVAL_S = 0.002
_T = TypeVar("_T")

Listener = Callable[[Sequence[Event]], None]

# Appended is re-exported: callers hold it as the handle `submit` returns.
__all__ = [
    "DEFAULT_COMMIT_INTERVAL_S",
    "DEFAULT_RETENTION_BYTES",
    "Appended",
    "EventLog",
    "Listener",
]


class EventLog:
    """Per-session event streams, the sessions registry and outbox cursors.

    Use `async with EventLog.open(path) as log:`; the context owns the writer
    task and, on exit, commits what was appended and closes the file.
    """

    def __init__(
        self,
        path: Path,
        writer: Writer,
        readers: ReaderPool,
        checkpointer: Checkpointer,
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
    ) -> None:
        self.path = path
        self.checkpointer = checkpointer
        self._writer = writer
        self._readers = readers
        self._thread = WriterThread()
        self._commits = GroupCommit(
            writer,
            self._thread,
            checkpointer,
            interval_s=commit_interval_s,
            on_commit=self._committed_now,
        )
        self._assigned = writer.heads()  # seq handed out, per session
        self._committed = dict(self._assigned)  # seq durable and readable
        self._closing = False
        self._listeners: list[Listener] = []
        self._lock_fd = -1

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        retention_bytes_per_session: int = DEFAULT_RETENTION_BYTES,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
    ) -> AsyncIterator[EventLog]:
        """Open (creating if needed) the log at `path`, e.g. `<state_dir>/events.sqlite3`."""
        if retention_bytes_per_session <= 0:
            raise ValueError("retention_bytes_per_session must be positive")
        if commit_interval_s < 0:
            raise ValueError("commit_interval_s must not be negative")
        file = Path(path)

        def _open() -> tuple[Writer, int, ReaderPool]:
            schema.prepare_file(file)
            lock = schema.lock_file(file)
            try:
                conn = schema.connect(file, synchronous=synchronous, autocheckpoint=False)
                try:
                    schema.migrate(conn)
                    writer = Writer(conn, retention_bytes_per_session)
                    readers = ReaderPool(file)
                    readers.prime()  # one reader for the log's life (see ReaderPool)
                    return writer, lock, readers
                except BaseException:
                    conn.close()
                    raise
            except BaseException:
                os.close(lock)
                raise

        writer, lock, readers = await anyio.to_thread.run_sync(_open)
        checkpointer = Checkpointer(file, synchronous=synchronous)
        self = cls(file, writer, readers, checkpointer, commit_interval_s)
        self._lock_fd = lock
        body_error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._commits.run)
                tg.start_soon(checkpointer.run)
                try:
                    yield self
                except Exception as exc:
                    # Re-raised below as itself, not wrapped in the task
                    # group's ExceptionGroup.
                    body_error = exc
                finally:
                    self._closing = True
                    tg.cancel_scope.cancel()
            if body_error is not None:
                raise body_error
        finally:
            self._closing = True
            # Commit what was appended before the close, even when the body
            # is being cancelled (a write is never interrupted midway).
            with anyio.CancelScope(shield=True):
                await self._commits.drain(EventLogClosed("event log closed"))
                self._readers.close()
                self.checkpointer.close()
                await self._thread.call(self._close_writer)
                self._thread.stop()

    def _close_writer(self) -> None:
        conn = self._writer.conn
        try:
            if self._commits.failed is None:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
            os.close(self._lock_fd)

    # Writing.

    async def append(
        self, session_id: str, type: str, data: Mapping[str, Any], ts: float | None = None
    ) -> Event:
        """Append one event; returns it once it is durable (see module doc).

        `data` is stored exactly (key order kept, nothing validated or
        dropped); it must be JSON-serializable (ValueError/TypeError
        otherwise, raised before a seq is assigned). `ts` is Unix seconds
        (now when omitted).
        """
        return await self.submit(session_id, type, data, ts).durable()

    def submit(
        self, session_id: str, type: str, data: Mapping[str, Any], ts: float | None = None
    ) -> Appended:
        """Assign the next seq now and queue the event for the next commit.

        The pipelined form of `append` (which is `await submit(...).durable()`):
        a relay can submit many events without waiting for each commit, then
        await the last one's `durable()` (commits are in submission order) or
        `flush()`. Viewers learn of events only after their commit (listeners).
        """
        self._check_open()
        seq = self._assigned.get(session_id, 0) + 1
        when = time.time() if ts is None else float(ts)
        payload, size = encode_payload(seq, session_id, when, type, data)
        self._assigned[session_id] = seq
        batch, index = self._commits.enqueue(
            PendingEvent(session_id, seq, when, type, payload, size)
        )
        return Appended(session_id, seq, batch, index)

    async def flush(self) -> None:
        """Wait until everything appended before this call is durable."""
        await self._op(lambda w: None)

    async def upsert_session(
        self,
        session_id: str,
        *,
        agent: str,
        cwd: str,
        state: str,
        acp_session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> SessionRecord:
        """Insert or replace a session's registry row (created_at kept on update).

        Ordered with appends: committed in the same batch order as events.
        """
        when = time.time() if now is None else now
        record = SessionRecord(
            session_id=session_id,
            agent=agent,
            cwd=cwd,
            state=state,
            acp_session_id=acp_session_id,
            created_at=when,
            updated_at=when,
            metadata=dict(metadata or {}),
        )
        await self._op(lambda w: w.upsert_session(record))
        stored = await self.get_session(session_id)
        assert stored is not None
        return stored

    # Outbox cursors: positions are global rowids (`Event.rowid`).

    async def get_delivery_cursor(self, name: str) -> int:
        """The cursor's position (0 at first); asking registers the cursor.

        While a cursor is registered, retention never drops an event past the
        slowest cursor: undelivered events stay, even over the byte budget,
        until the cursor moves past them (moving it trims the sessions over
        budget at once). `delete_delivery_cursor` releases that hold. A cursor
        may move backwards (re-delivery is allowed: at least once).
        """
        result = await self._op(lambda w: w.register_cursor(name))
        assert isinstance(result, int)
        return result

    async def set_delivery_cursor(self, name: str, rowid: int) -> None:
        await self._op(lambda w: w.set_cursor(name, rowid))

    async def delete_delivery_cursor(self, name: str) -> None:
        await self._op(lambda w: w.delete_cursor(name))

    # Reading (each read is one consistent snapshot, in a worker thread).

    async def read(self, session_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Events of `session_id` with seq > after_seq, in order, up to `limit`.

        Raises `EventsDropped` if retention removed any of the requested
        events (it never skips them silently). Only durable events are seen.
        """
        return await self._read(lambda c: reads.read_session(c, session_id, after_seq, limit))

    async def read_payloads(
        self, session_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[str]:
        """Like `read`, payloads only (the i-th has seq after_seq + 1 + i).

        The resume fast path: the stored JSON text, ready to send.
        """
        return await self._read(lambda c: reads.read_payloads(c, session_id, after_seq, limit))

    async def read_global(
        self,
        after_rowid: int,
        limit: int = 500,
        max_bytes: int = 1024 * 1024,
        types: Collection[str] | None = None,
    ) -> tuple[list[Event], int]:
        """The outbox read: see `reads.read_global`; returns (events, new cursor)."""
        return await self._read(
            lambda c: reads.read_global(c, after_rowid, limit, max_bytes, types)
        )

    async def get_session(self, session_id: str) -> SessionRecord | None:
        return await self._read(lambda c: reads.get_session(c, session_id))

    async def list_sessions(self) -> list[SessionRecord]:
        return await self._read(reads.list_sessions)

    async def stream_bounds(self, session_id: str) -> tuple[int, int, int]:
        """(first_seq, head_seq, dropped_total) of a session's stored events."""
        return await self._read(lambda c: reads.stream_bounds(c, session_id))

    def head_seq(self, session_id: str) -> int:
        """The last durable seq of a session (0 when none); no I/O."""
        return self._committed.get(session_id, 0)

    def heads(self) -> dict[str, int]:
        """Last durable seq of every session with events; no I/O."""
        return dict(self._committed)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(events)` on the event loop after each commit.

        Events arrive in append order, only once durable. A listener must not
        block (push into a bounded queue); its exceptions are logged and
        ignored. Returns a function that removes the listener.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def size_bytes(self) -> int:
        """Bytes on disk of the database and its WAL (for a metric)."""
        total = 0
        for suffix in ("", "-wal"):
            with suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    # Internals.

    def _check_open(self) -> None:
        if self._commits.failed is not None:
            raise EventLogClosed(f"event log failed: {self._commits.failed!r}")
        if self._closing:
            raise EventLogClosed("event log closed")

    async def _op(self, op: PendingOp) -> object:
        self._check_open()
        return await self._commits.op(op)

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(self._readers.run, fn)

    def _committed_now(self, events: Sequence[Event]) -> None:
        for event in events:
            self._committed[event.session_id] = event.seq
        for listener in list(self._listeners):
            try:
                listener(events)
            except Exception:
                log.exception("event log listener failed")
