"""Migration 0010 (names per owner) on SQLite and PostgreSQL, with rows of 0008's schema:
they keep their data under the new keys, and two owners may then use one name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from control_plane.storage.db import layer_defaults, make_engine, tasks
from control_plane.storage.migrate import alembic_config, upgrade

# The audit columns' values, provider .. placement_explanation_json.
AUDIT = "'hetzner', 'small', 'reservation', 'null', '{}', '{}', '{\"version\": 1}'"


@pytest.fixture
def bare(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


AUDIT_COLS = (
    "provider, requested_vm_size, vm_size_source, requirements_json, reservation_json,"
    " reservation_provenance_json, placement_explanation_json"
)


def seed_0008(engine: Engine) -> None:
    upgrade(engine, "0008_node_ca")
    audit_cols = AUDIT_COLS
    with engine.begin() as conn:
        for kind, layer_id, version, owner in [
            ("user", "alice", 1, "admin"),  # an admin wrote alice's layer first
            ("user", "alice", 2, "admin"),
            ("project", "p", 1, "alice"),
        ]:
            conn.execute(
                text("INSERT INTO layer_defaults VALUES (:kind, :id, :v, '{}', :owner, 'x', 1.0)"),
                {"kind": kind, "id": layer_id, "v": version, "owner": owner},
            )
        conn.execute(
            text(
                f"INSERT INTO tasks (task_id, owner, agent, workspace_id, {audit_cols},"
                f" created_at) VALUES ('t1', 'alice', 'fake', 'ws-1', {AUDIT}, 1.0),"
                f" ('old', NULL, NULL, NULL, {AUDIT}, 1.0)"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO workspaces (workspace_id, task_id, owner, node_id, state,"
                f" {audit_cols}, created_at) VALUES ('ws-1', 't1', 'alice', 'n1', 'active',"
                f" {AUDIT}, 1.0)"
            )
        )


def test_rows_keep_their_data_under_the_owners_keys(bare: Engine) -> None:
    seed_0008(bare)
    upgrade(bare)
    with bare.connect() as conn:
        layer_rows = conn.execute(
            select(
                layer_defaults.c.kind, layer_defaults.c.owner, layer_defaults.c.version
            ).order_by(layer_defaults.c.kind, layer_defaults.c.version)
        ).all()
        task_rows = conn.execute(
            select(tasks.c.owner, tasks.c.client_task_id, tasks.c.task_id).order_by(tasks.c.task_id)
        ).all()
        ws = conn.execute(text("SELECT owner, task_id, project_id FROM workspaces")).one()
    assert [tuple(r) for r in layer_rows] == [
        ("platform", "platform", 1),
        ("project", "alice", 1),
        ("user", "alice", 1),  # a user's layer is that user's, whoever wrote it
        ("user", "alice", 2),
    ]
    # a row kept keeps its key, and takes it as its owner's `taskId`
    assert [tuple(r) for r in task_rows] == [("", "old", "old"), ("alice", "t1", "t1")]
    assert tuple(ws) == ("alice", "t1", None)
    with bare.begin() as conn:  # bob may now use alice's names
        conn.execute(
            insert(layer_defaults).values(
                kind="project",
                owner="bob",
                layer_id="p",
                version=1,
                requirements_json="{}",
                updated_by="bob",
                updated_at=2.0,
            )
        )
        conn.execute(
            text(
                "INSERT INTO workspaces (workspace_id, task_id, owner, node_id, state, provider,"
                " requested_vm_size, vm_size_source, requirements_json, reservation_json,"
                f" reservation_provenance_json, placement_explanation_json, created_at) VALUES"
                f" ('ws-2', 't1', 'bob', 'n1', 'active', {AUDIT}, 2.0)"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO tasks (task_id, client_task_id, owner, agent, workspace_id,"
                f" {AUDIT_COLS}, created_at) VALUES ('task-2', 't1', 'bob', 'fake', 'ws-2',"
                f" {AUDIT}, 2.0)"
            )
        )
    with pytest.raises(IntegrityError), bare.begin() as conn:  # but not twice for one owner
        conn.execute(
            text(
                f"INSERT INTO tasks (task_id, client_task_id, owner, agent, workspace_id,"
                f" {AUDIT_COLS}, created_at) VALUES ('task-3', 't1', 'bob', 'fake', 'ws-3',"
                f" {AUDIT}, 3.0)"
            )
        )
    with pytest.raises(IntegrityError), bare.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO workspaces (workspace_id, task_id, owner, node_id, state, provider,"
                " requested_vm_size, vm_size_source, requirements_json, reservation_json,"
                f" reservation_provenance_json, placement_explanation_json, created_at) VALUES"
                f" ('ws-3', 't1', 'bob', 'n1', 'active', {AUDIT}, 3.0)"
            )
        )


def test_down_to_0008_and_up_again(bare: Engine) -> None:
    seed_0008(bare)
    upgrade(bare)
    with bare.begin() as conn:
        command.downgrade(alembic_config(conn), "0008_node_ca")
    with bare.connect() as conn:
        owner = conn.execute(text("SELECT owner FROM tasks WHERE task_id = 'old'")).scalar_one()
        assert owner is None
    upgrade(bare)
    with bare.connect() as conn:
        assert conn.execute(select(tasks.c.task_id)).scalars().all() != []
