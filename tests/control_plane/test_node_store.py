"""Event ingest exactly once by (node, session, seq), also under concurrent writers;
ready and heartbeat upserts. On SQLite and PostgreSQL (the `engine` fixture)."""

from __future__ import annotations

import math
import threading

from sqlalchemy import Engine

from control_plane.storage import node_store
from control_plane.storage.node_store import NodeEvent


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
    rows = node_store.list_events(engine, "n1", "s1")[0]
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["data"] == {"seq": 1}
    assert len(node_store.list_events(engine, "n1", None)[0]) == 4


def test_empty_batch(engine: Engine) -> None:
    assert node_store.store_events(engine, "n1", [], 0.0) == node_store.IngestResult(0, 0)


def test_concurrent_overlapping_batches_store_each_event_once(engine: Engine) -> None:
    """Eight threads, each with its own connection, post batches that overlap in both
    directions (some in reverse order): every event is stored once, none is lost."""
    results: list[node_store.IngestResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def post(i: int) -> None:
        seqs = list(range(1 + i * 25, 1 + i * 25 + 100))
        if i % 2:
            seqs.reverse()
        batch = [ev(f"s{j % 3}", seq) for seq in seqs for j in (0, 1, 2)]
        try:
            start.wait()
            results.append(node_store.store_events(engine, "n1", batch, 0.0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    unique = {
        (f"s{j}", seq)
        for i in range(8)
        for seq in range(1 + i * 25, 101 + i * 25)
        for j in range(3)
    }
    assert sum(r.stored for r in results) == len(unique)
    assert sum(r.stored + r.duplicates for r in results) == 8 * 300
    stored = [(r["session_id"], r["seq"]) for r in node_store.list_events(engine, "n1", None)[0]]
    assert sorted(stored) == sorted(unique)


def test_a_batch_larger_than_one_statement(engine: Engine) -> None:
    batch = [ev("s", seq) for seq in range(1, 1301)]
    assert node_store.store_events(engine, "n1", batch, 0.0) == node_store.IngestResult(1300, 0)
    again = node_store.store_events(engine, "n1", [*batch[-2:], ev("s", 1301)], 0.0)
    assert again == node_store.IngestResult(1, 2)


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


def test_what_json_allows_beyond_the_standard_is_stored_too(engine: Engine) -> None:
    """The daemon relays what agents send: integers past 64 bits, lone surrogates. NaN and
    the infinities (which the API refuses now, and PostgreSQL's json cannot hold) are read
    back as strings on both databases: an old row holding one never fails a read."""
    data = {"big": 2**80, "odd": "\ud800", "nan": math.nan, "inf": [math.inf, -math.inf]}
    got = node_store.store_events(engine, "n1", [NodeEvent("s", 1, 1.0, "acp.update", data)], 0)
    assert got.stored == 1
    (row,) = node_store.list_events(engine, "n1", "s")[0]
    stored = row["data"]
    assert (stored["big"], stored["odd"]) == (2**80, "\ud800")
    assert (stored["nan"], stored["inf"]) == ("NaN", ["Infinity", "-Infinity"])
