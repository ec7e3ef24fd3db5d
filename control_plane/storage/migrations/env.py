"""Alembic environment: runs on the connection handed over by control_plane.storage.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from control_plane.storage.db import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Standalone use (alembic CLI): the URL comes from the config.
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or use control_plane.storage.migrate.upgrade()")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)


_main()
