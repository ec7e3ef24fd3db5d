"""The database engine: SQLite (private files, WAL) or PostgreSQL (psycopg 3), from a URL.

The schema is in ``db`` (which re-exports these for its callers).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

log = logging.getLogger("control_plane.storage.db")

DB_FILENAME = "control-plane.db"
PRIVATE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / DB_FILENAME}"


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for `url`: a libpq URL (postgresql://, postgres://) means psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets a busy timeout and WAL so threads can share it."""
    url = engine_url(url)
    if not url.startswith("sqlite"):
        # Requests run in worker threads (anyio's default limit is 40): enough connections
        # that a burst of callbacks waits on the database, not on the pool.
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        make_private_sqlite(Path(database))
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


class DatabaseFileError(OSError):
    """The SQLite database file cannot be made private (one line for a person)."""


def make_private_sqlite(path: Path) -> None:
    """The database file (made empty if missing: SQLite takes that as a new database) and the
    files SQLite keeps beside it, 0600 whatever the umask; a wider mode found is narrowed,
    and said, since someone may have read the keys while it was.

    By path, never by opening the database: closing any descriptor of a file drops every
    POSIX lock this process holds on it, SQLite's included, and a process that already has
    the database open (the dev command opens a second engine beside its control plane's)
    would then corrupt it ("disk I/O error")."""
    if not os.path.lexists(path):
        try:
            # a new file: nothing in this process has it open, so closing is harmless
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise DatabaseFileError(
                f"cannot create the database file {path}: {exc.strerror}"
            ) from None
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        try:
            _narrow(file)
        except FileNotFoundError:
            if file == path:
                raise DatabaseFileError(f"the database file {path} vanished") from None


def _narrow(path: Path) -> None:
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise DatabaseFileError(f"{path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode == PRIVATE_FILE_MODE:
        return
    try:
        os.chmod(path, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise DatabaseFileError(
            f"{path} has mode {mode:04o} and cannot be made 0600: {exc.strerror}"
        ) from None
    if info.st_size and mode & 0o077:
        log.warning(
            "%s had mode %04o (group or others could read it); set it to 0600. It holds the "
            "signing keys and the node CA's key: rotate the signing keys if others may have "
            "read it (POST /api/keys/rotate)",
            path,
            mode,
        )
