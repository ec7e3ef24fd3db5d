"""The provisioning migrations go on and come back off cleanly."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import inspect, text

from control_plane.storage.db import make_engine
from control_plane.storage.migrate import alembic_config, upgrade
from control_plane.storage.provisioning_store import (
    CertificateOnRecord,
    certificate_on_record,
    node_provisioning,
)

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


def test_0011_adds_the_key_on_record_and_keeps_older_rows(tmp_path: Path) -> None:
    """A row bootstrapped before 0011 keeps its certificate with no key on record (its next
    renewal records one); the downgrade drops only the column."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    upgrade(engine, "0008_node_ca")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO node_provisioning (node_id, hostname, dns_name, created_at, "
                "created_by, params, bootstrap_token_sha256, bootstrap_expires_at, "
                "bootstrapped_at, cert_serial, cert_sha256, cert_not_after) VALUES ('n1', 'n1', "
                "'n1.d.internal', 1, 'ops', '{}', :digest, 2, 1.5, 'ab', :fp, 99)"
            ),
            {"digest": "0" * 64, "fp": "f" * 64},
        )
    upgrade(engine)
    assert certificate_on_record(engine, "n1") == CertificateOnRecord(0xAB, "f" * 64, 99.0, None)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0008_node_ca")
    columns = {c["name"] for c in inspect(engine).get_columns("node_provisioning")}
    assert "cert_public_key_sha256" not in columns and "cert_serial" in columns
    with engine.connect() as conn:
        assert conn.execute(text("SELECT cert_serial FROM node_provisioning")).scalar() == "ab"
    engine.dispose()
