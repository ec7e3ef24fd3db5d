"""Migrations on SQLite and PostgreSQL: the legacy GitHub schema (unversioned, made by the
pre-Alembic code), the versioned path from 0001, tasks from before placement, and the way
down and up again."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from control_plane.github import links as github_links
from control_plane.storage.db import is_postgres, make_engine
from control_plane.storage.migrate import alembic_config, upgrade

LEGACY_SQLITE = """
CREATE TABLE github_installations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    installation_id VARCHAR(255) NOT NULL UNIQUE,
    user_id VARCHAR(128) NOT NULL,
    account_login VARCHAR(255),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""
LEGACY_POSTGRES = """
CREATE TABLE github_installations (
    id SERIAL PRIMARY KEY,
    installation_id VARCHAR(255) NOT NULL UNIQUE,
    user_id VARCHAR(128) NOT NULL,
    account_login VARCHAR(255),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
)
"""
LEGACY_ROWS = [("1001", "alice", "acme"), ("1002", "bob", "acme-labs"), ("1003", "carol", None)]


@pytest.fixture
def bare(database_url: str) -> Iterator[Engine]:
    """An engine on an empty database: the test migrates it itself."""
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def insert_legacy_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        for gid, user, login in LEGACY_ROWS:
            conn.execute(
                text(
                    "INSERT INTO github_installations (installation_id, user_id, account_login)"
                    " VALUES (:gid, :user, :login)"
                ),
                {"gid": gid, "user": user, "login": login},
            )


def rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT installation_id, external_installation_id, user_id, account_login "
                    "FROM github_installations ORDER BY id"
                )
            )
        ]


def test_unversioned_legacy_schema_is_migrated_keeping_every_row(bare: Engine) -> None:
    with bare.begin() as conn:
        conn.execute(text(LEGACY_POSTGRES if is_postgres(bare) else LEGACY_SQLITE))
    insert_legacy_rows(bare)
    upgrade(bare)

    assert rows(bare) == [(gid, gid, user, login) for gid, user, login in LEGACY_ROWS]
    indexes = {i["name"]: i for i in inspect(bare).get_indexes("github_installations")}
    assert indexes["ix_github_installations_external_installation_id"]["column_names"] == [
        "external_installation_id"
    ]
    unique = indexes["uq_github_installations_user_external"]
    assert unique["unique"]
    assert unique["column_names"] == ["user_id", "external_installation_id"]
    # The rest of the schema was created too, and running again is a no-op.
    expected = {"nodes", "node_events", "tasks", "workspaces", "layer_defaults", "signing_keys"}
    assert expected <= set(inspect(bare).get_table_names())
    upgrade(bare)
    assert len(rows(bare)) == len(LEGACY_ROWS)

    # Legacy rows keep working after the migration.
    (alice,) = github_links.links_for_user(bare, "alice")
    assert (alice.storage_id, alice.github_id) == ("1001", "1001")
    bob_too = github_links.link_installation(bare, "dave", "1002", "acme-labs")
    assert bob_too.storage_id == "dave:1002"
    assert {x.user_id for x in github_links.links_for_installation(bare, "1002")} == {
        "bob",
        "dave",
    }
    with pytest.raises(github_links.AlreadyLinkedError):
        github_links.link_installation(bare, "alice", "1001")


def test_versioned_upgrade_from_legacy_revision_backfills(bare: Engine) -> None:
    upgrade(bare, "0001_legacy_github")
    insert_legacy_rows(bare)
    upgrade(bare)
    assert [r[1] for r in rows(bare)] == ["1001", "1002", "1003"]


def test_tasks_from_before_placement_get_an_explanation_not_an_empty_string(
    bare: Engine,
) -> None:
    upgrade(bare, "0003_nodes_events_tasks")
    with bare.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (task_id, provider, requested_vm_size, vm_size_source,"
                " requirements_json, reservation_json, reservation_provenance_json,"
                " created_at) VALUES ('old', 'hetzner', 'small', 'reservation', 'null', '{}',"
                " '{}', 1.0)"
            )
        )
        conn.execute(text("INSERT INTO session_bindings VALUES ('s', 'n1', 1.0)"))
    upgrade(bare)
    with bare.connect() as conn:
        doc, owner = conn.execute(
            text("SELECT placement_explanation_json, owner FROM tasks WHERE task_id = 'old'")
        ).one()
        platform = conn.execute(
            text("SELECT layer_id, version FROM layer_defaults WHERE kind = 'platform'")
        ).one()
    explanation = json.loads(doc)
    assert explanation["decision"] == {"kind": "none"}
    assert "before placement existed" in explanation["summary"]
    assert owner == ""  # no user's: 0010 keys tasks by (owner, task_id)
    assert tuple(platform) == ("platform", 1)
    tables = set(inspect(bare).get_table_names())
    assert "session_bindings" not in tables
    assert "placement_explanation" not in {c["name"] for c in inspect(bare).get_columns("tasks")}


def test_down_to_0003_and_up_again(bare: Engine) -> None:
    upgrade(bare)
    with bare.begin() as conn:
        command.downgrade(alembic_config(conn), "0003_nodes_events_tasks")
    tables = set(inspect(bare).get_table_names())
    assert "session_bindings" in tables and "workspaces" not in tables
    assert "placement_explanation" in {c["name"] for c in inspect(bare).get_columns("tasks")}
    upgrade(bare)
    assert "workspaces" in set(inspect(bare).get_table_names())


def test_0009_counts_the_events_already_stored(bare: Engine) -> None:
    """The per-node bound starts from what each node's events already take."""
    upgrade(bare, "0008_node_ca")
    with bare.begin() as conn:
        for node, seq, data in [("n1", 1, '{"a": 1}'), ("n1", 2, '"xyz"'), ("n2", 1, "null")]:
            conn.execute(
                text(
                    "INSERT INTO node_events (node_id, session_id, seq, ts, type, data,"
                    " received_at) VALUES (:n, 's-1', :seq, 1.0, 'acp.update', :d, 1.0)"
                ),
                {"n": node, "seq": seq, "d": data},
            )
    upgrade(bare)
    with bare.connect() as conn:
        found = conn.execute(text("SELECT node_id, event_bytes FROM node_event_bytes")).all()
    got: dict[str, int] = {str(node): int(used) for node, used in found}
    per_event = len("acp.update") + len("s-1")
    assert got == {"n1": 8 + 5 + 2 * per_event, "n2": 4 + per_event}
