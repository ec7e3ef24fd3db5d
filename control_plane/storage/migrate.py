"""Run the Alembic migrations shipped in this package, programmatically."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LEGACY_REVISION = "0001_legacy_github"
# Replicas starting together on one PostgreSQL migrate one after another, under this lock.
_PG_MIGRATION_LOCK = 0x766D_6167_0001


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _is_unversioned_legacy(connection: Connection) -> bool:
    """A database made by the pre-Alembic code: the legacy installations table, no versions."""
    insp = inspect(connection)
    tables = set(insp.get_table_names())
    if "alembic_version" in tables or "github_installations" not in tables:
        return False
    columns = {c["name"] for c in insp.get_columns("github_installations")}
    return "external_installation_id" not in columns


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` (default: the newest)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Held until this transaction ends; the next replica then finds the head.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        cfg = alembic_config(conn)
        if _is_unversioned_legacy(conn):
            command.stamp(cfg, LEGACY_REVISION)
        command.upgrade(cfg, revision)
