"""The provisioning migration goes on from 0003 and comes back off cleanly."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import inspect

from control_plane.storage.db import make_engine
from control_plane.storage.migrate import alembic_config, upgrade
from control_plane.storage.provisioning_store import node_provisioning

PREVIOUS = "0006_workspaces_placement"


def test_upgrade_from_0003_and_downgrade(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    upgrade(engine, PREVIOUS)
    assert "node_provisioning" not in inspect(engine).get_table_names()
    upgrade(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("node_provisioning")}
    assert columns == {c.name for c in node_provisioning.c}
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), PREVIOUS)
    assert "node_provisioning" not in inspect(engine).get_table_names()
    engine.dispose()
