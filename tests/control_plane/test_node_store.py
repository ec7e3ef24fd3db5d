"""Event ingest exactly once by (node, session, seq); session binding to the first node."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from control_plane import node_store
from control_plane.db import make_engine, sqlite_url
from control_plane.migrate import upgrade
from control_plane.node_store import NodeEvent


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = make_engine(sqlite_url(tmp_path))
    upgrade(eng)
    return eng


def ev(session: str, seq: int) -> NodeEvent:
    return NodeEvent(session, seq, 1.0 + seq, "session.state", {"seq": seq})


def test_events_are_stored_once(engine: Engine) -> None:
    first = node_store.store_events(engine, "n1", [ev("s1", 1), ev("s1", 2), ev("s1", 2)], 0.0)
    assert (first.stored, first.duplicates) == (2, 1)
    again = node_store.store_events(engine, "n1", [ev("s1", 2), ev("s1", 3), ev("s2", 1)], 0.0)
    assert (again.stored, again.duplicates) == (2, 1)
    # The same (session, seq) from another node is another event.
    other = node_store.store_events(engine, "n2", [ev("s1", 1)], 0.0)
    assert other.stored == 1
    rows = node_store.list_events(engine, "n1", "s1")
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["data"] == {"seq": 1}
    assert len(node_store.list_events(engine, "n1", None)) == 4


def test_empty_batch(engine: Engine) -> None:
    assert node_store.store_events(engine, "n1", [], 0.0) == node_store.IngestResult(0, 0)


def test_first_node_binds_the_session(engine: Engine) -> None:
    assert node_store.bind_session(engine, "s", "n1", 0.0) == "n1"
    assert node_store.bind_session(engine, "s", "n2", 0.0) == "n1"
    assert node_store.bind_session(engine, "s", "n1", 0.0) == "n1"


def test_ready_and_heartbeat_upsert(engine: Engine) -> None:
    node_store.record_heartbeat(engine, "n1", [{"session_id": "s"}], {"load": 0.5}, 5.0)
    node_store.record_ready(engine, "n1", "0.1.0", {"vcpu": 2}, 6.0)
    node = node_store.get_node(engine, "n1")
    assert node is not None
    assert (node["version"], node["capacity"], node["usage"]) == (
        "0.1.0",
        {"vcpu": 2},
        {"load": 0.5},
    )
    assert (node["ready_at"], node["last_heartbeat_at"]) == (6.0, 5.0)
