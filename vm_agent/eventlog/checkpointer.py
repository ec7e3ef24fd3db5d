"""Copies the write-ahead log back into the database file, off the commit path.

SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL pages, so that
one commit also copies the pages and fsyncs the file (tens of ms): every append waiting
for it, and every viewer, waits too. The writer's connection turns the automatic
checkpoint off, and this runs the same PASSIVE checkpoint (it never waits for, nor
blocks, the writer or readers) on its own connection in a worker thread, when enough was
committed since the last one. The durability of commits is unchanged: in WAL mode a
commit is durable against a crash of the process once it is in the WAL.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import anyio
import anyio.to_thread

from . import schema

log = logging.getLogger(__name__)

# Close to SQLite's own default of 1,000 pages: whichever comes first. Many small commits
# each add a page or more to the WAL, so their count matters as well as the bytes.
DEFAULT_BYTES = 4 * 1024 * 1024
DEFAULT_COMMITS = 500


class Checkpointer:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        every_bytes: int = DEFAULT_BYTES,
        every_commits: int = DEFAULT_COMMITS,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._every_bytes = every_bytes
        self._every_commits = every_commits
        self._bytes = 0
        self._commits = 0
        self._due = anyio.Event()
        self._conn: sqlite3.Connection | None = None
        self.done = 0  # checkpoints run (for tests and a metric)

    def committed(self, nbytes: int) -> None:
        """Called by the writer after each commit (never waits)."""
        self._bytes += nbytes
        self._commits += 1
        if self._bytes >= self._every_bytes or self._commits >= self._every_commits:
            self._due.set()

    async def run(self) -> None:
        """Checkpoints whenever due, one at a time, until cancelled."""
        while True:
            await self._due.wait()
            self._due = anyio.Event()
            self._bytes = self._commits = 0
            try:
                await anyio.to_thread.run_sync(self._checkpoint, abandon_on_cancel=False)
            except sqlite3.Error as exc:
                # Not fatal: the WAL keeps the data; the next one (or the close) copies it.
                log.warning("event log checkpoint failed: %s", exc)
            self.done += 1

    def _checkpoint(self) -> None:
        if self._conn is None:
            self._conn = schema.connect(self._path, synchronous=self._synchronous)
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
