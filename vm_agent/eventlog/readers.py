"""Read-only connections for worker threads, reused between reads.

One connection is opened with the log and kept for its life. When another cannot be opened
(the process is out of file descriptors, say), a read waits for one in use instead of
failing: the log stays readable, one read at a time, while descriptors are short, and no
session or viewer fails for it. A new connection opens its database, WAL and shared-memory
files before it is handed out, and keeps temporary tables in memory, so that no read opens
a file halfway.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import schema

_T = TypeVar("_T")
log = logging.getLogger(__name__)


class ReaderPool:
    """Read-only connections handed to worker threads one at a time."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        self._open = 0  # connections that exist, idle or in use
        self._cond = threading.Condition()
        self._closed = False

    def prime(self) -> None:
        """Opens the first connection (blocking; from a worker thread)."""
        conn = self._connect()
        with self._cond:
            self._open += 1
            self._idle.append(conn)

    def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._acquire()
        try:
            return fn(conn)
        finally:
            with self._cond:
                if self._closed:
                    self._open -= 1
                    conn.close()
                else:
                    self._idle.append(conn)
                    self._cond.notify()

    def _acquire(self) -> sqlite3.Connection:
        with self._cond:
            if self._idle:
                return self._idle.pop()
            self._open += 1  # counted before it exists: others may wait for it
        try:
            return self._connect()
        except (sqlite3.Error, OSError) as exc:
            with self._cond:
                self._open -= 1
                if self._open == 0 or self._closed:
                    raise
                log.warning("event log: another reader cannot be opened (%s); waiting", exc)
                while not self._idle:
                    if self._closed:
                        raise
                    self._cond.wait()
                return self._idle.pop()

    def _connect(self) -> sqlite3.Connection:
        conn = schema.connect(self._path, synchronous="NORMAL", readonly=True)
        try:
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # opens -wal, -shm
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()
