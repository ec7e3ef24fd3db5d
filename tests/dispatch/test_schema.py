"""Migration 0014 builds what the code's schema says, marks older tasks ended, and goes back."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select

from control_plane.storage.db import make_engine, metadata, tasks
from control_plane.storage.migrate import alembic_config, upgrade

OURS = (
    "task_transitions",
    "task_prompts",
    "task_permission_answers",
    "node_addresses",
    "workspace_repositories",
    "tasks",  # last: downgraded to 0008, the rest are gone and it stays
)


def test_the_migrated_schema_is_the_code_s(engine: Engine) -> None:
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diffs if any(f"'{name}'" in repr(d) for name in OURS)] == []


def test_a_task_from_before_dispatch_is_ended_with_the_reason_and_it_goes_back(
    database_url: str,
) -> None:
    eng = make_engine(database_url)
    try:
        upgrade(eng, "0008_node_ca")
        with eng.begin() as conn:
            conn.execute(
                insert(tasks).values(
                    task_id="old",
                    requirements_json="{}",
                    reservation_json="{}",
                    reservation_provenance_json="{}",
                    placement_explanation_json="{}",
                    created_at=5.0,
                )
            )
        upgrade(eng)
        with eng.connect() as conn:
            row = conn.execute(select(tasks).where(tasks.c.task_id == "old")).mappings().one()
        assert (row["status"], row["ended_at"]) == ("failed", 5.0)
        assert "before tasks were dispatched" in row["reason"]
        with eng.begin() as conn:
            command.downgrade(alembic_config(conn), "0008_node_ca")
        with eng.connect() as conn:
            names = set(inspect(conn).get_table_names())
            columns = {c["name"] for c in inspect(conn).get_columns("tasks")}
        assert not names & set(OURS[:-1]) and "status" not in columns and "tasks" in names
    finally:
        eng.dispose()
