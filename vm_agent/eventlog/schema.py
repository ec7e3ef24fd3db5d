"""The database file: creation with private modes, pragmas, schema."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

from .model import EventLogError

SCHEMA_VERSION = 1

# `events.id` is the global append position. AUTOINCREMENT keeps ids from
# being reused after retention deletes the newest rows' predecessors (an id
# reused below an outbox cursor would never be delivered).
_DDL = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    size INTEGER NOT NULL,
    payload TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_session_seq ON events (session_id, seq);
CREATE TABLE IF NOT EXISTS streams (
    session_id TEXT PRIMARY KEY,
    head_seq INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    dropped INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    cwd TEXT NOT NULL,
    acp_session_id TEXT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
"""


def prepare_file(path: Path) -> None:
    """Create the parent (0700) and the database file (0600) before SQLite does.

    SQLite gives its -wal and -shm files the main file's mode, so they are
    private too. An existing file is narrowed to 0600; an existing parent is
    left as it is (it may be a shared directory the operator chose).
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def lock_file(path: Path) -> int:
    """Hold `<path>.lock` exclusively (released when the fd closes or we die).

    Two daemons appending to one file would hand out the same seqs; the second
    is refused at open with a message instead.
    """
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EventLogError(f"{path} is in use by another process") from None
    return fd


# How long a statement waits for the write lock: the daemon is the log's only writer, so
# only a stalled disk (or a test's lock) makes it wait at all.
BUSY_TIMEOUT_MS = 10_000


def connect(
    path: Path, *, synchronous: str, readonly: bool = False, autocheckpoint: bool = True
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL on.

    ``autocheckpoint=False`` is for the writer: the `Checkpointer` does it off the commit path.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
        return conn
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise RuntimeError(f"{path}: could not switch to WAL mode (got {mode})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Create the schema in one transaction; refuse a newer schema than ours."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"event log schema version {version} is newer than this daemon's {SCHEMA_VERSION}"
        )
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
