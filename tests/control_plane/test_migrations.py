"""The GitHub installations migration on a SQLite file made with the legacy schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect

from control_plane import github_links
from control_plane.db import make_engine
from control_plane.migrate import upgrade

LEGACY_SCHEMA = """
CREATE TABLE github_installations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    installation_id VARCHAR(255) NOT NULL UNIQUE,
    user_id VARCHAR(128) NOT NULL,
    account_login VARCHAR(255),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
"""
LEGACY_ROWS = [("1001", "alice", "acme"), ("1002", "bob", "acme-labs"), ("1003", "carol", None)]


def make_legacy_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_SCHEMA)
    conn.executemany(
        "INSERT INTO github_installations (installation_id, user_id, account_login) "
        "VALUES (?, ?, ?)",
        LEGACY_ROWS,
    )
    conn.commit()
    conn.close()


def rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT installation_id, external_installation_id, user_id, account_login "
            "FROM github_installations ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def test_unversioned_legacy_file_is_migrated_keeping_every_row(tmp_path: Path) -> None:
    db = tmp_path / "legacy.db"
    make_legacy_db(db)
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)

    assert rows(db) == [(gid, gid, user, login) for gid, user, login in LEGACY_ROWS]
    indexes = {i["name"]: i for i in inspect(engine).get_indexes("github_installations")}
    assert indexes["ix_github_installations_external_installation_id"]["column_names"] == [
        "external_installation_id"
    ]
    unique = indexes["uq_github_installations_user_external"]
    assert unique["unique"]
    assert unique["column_names"] == ["user_id", "external_installation_id"]
    # The rest of the schema was created too, and running again is a no-op.
    assert {"nodes", "node_events", "tasks"} <= set(inspect(engine).get_table_names())
    upgrade(engine)
    assert len(rows(db)) == len(LEGACY_ROWS)

    # Legacy rows keep working after the migration.
    (alice,) = github_links.links_for_user(engine, "alice")
    assert (alice.storage_id, alice.github_id) == ("1001", "1001")
    bob_too = github_links.link_installation(engine, "dave", "1002", "acme-labs")
    assert bob_too.storage_id == "dave:1002"
    assert {x.user_id for x in github_links.links_for_installation(engine, "1002")} == {
        "bob",
        "dave",
    }
    with pytest.raises(github_links.AlreadyLinkedError):
        github_links.link_installation(engine, "alice", "1001")
    engine.dispose()


def test_versioned_upgrade_from_legacy_revision_backfills(tmp_path: Path) -> None:
    db = tmp_path / "versioned.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine, "0001_legacy_github")
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO github_installations (installation_id, user_id, account_login) "
        "VALUES (?, ?, ?)",
        LEGACY_ROWS,
    )
    conn.commit()
    conn.close()
    upgrade(engine)
    assert [r[1] for r in rows(db)] == ["1001", "1002", "1003"]
    engine.dispose()
