"""A hostile node (or admin request) against the control plane, over real HTTP on loopback:
numbers that poison placement, events that fill the database, malformed values that once
gave 500. Each is refused with a 4xx and leaves nothing stored; rows stored before the
checks existed are read without a 500."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import func, select

from control_plane.settings import ControlPlaneSettings
from control_plane.storage import node_store
from control_plane.storage.db import is_postgres, node_events, nodes, signing_keys
from tests.control_plane.harness import Running, running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CAPACITY = {"cpus": 4, "mem_total_bytes": 8 * 2**30, "disk_total_bytes": 80 * 2**30}


def event(seq: int, *, session: str = "s1", data: Any = None, **over: Any) -> dict[str, Any]:
    return {"session_id": session, "seq": seq, "ts": 1.5, "type": "acp.update", "data": data} | over


def count(cp: Running, table: Any) -> int:
    with cp.plane.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


async def post_raw(cp: Running, path: str, body: str, headers: dict[str, str]) -> Any:
    return await cp.client.post(
        path, content=body.encode(), headers=headers | {"Content-Type": "application/json"}
    )


# Item 1: a node poisons placement.


@pytest.mark.parametrize(
    ("route", "body", "status"),
    [
        ("ready", '{"version": "1", "capacity": {"cpus": NaN}}', 400),
        ("ready", '{"version": "1", "capacity": {"cpus": 4, "mem_total_bytes": Infinity}}', 400),
        ("ready", '{"version": "1", "capacity": {"disk_total_bytes": -Infinity}}', 400),
        ("ready", '{"version": "1", "capacity": {"cpus": 1e400}}', 400),
        ("ready", '{"version": "1", "capacity": {"cpus": 1000000000}}', 422),
        ("ready", '{"version": "1", "capacity": {"mem_total_bytes": -1}}', 422),
        ("heartbeat", '{"usage": {"mem_total_bytes": Infinity}}', 400),
        ("heartbeat", '{"usage": {"cpus": NaN}}', 400),
        ("heartbeat", '{"usage": {"disk_total_bytes": 1e300}}', 422),
        # the activity a node reports keeps it from being reaped: only counts are stored
        ("heartbeat", '{"activity": {"turns": -1}}', 422),
        ("heartbeat", '{"activity": {"terminals": 1e300}}', 422),
        ("heartbeat", '{"activity": {"background": 10000000000}}', 422),
        ("heartbeat", '{"activity": {"turns": "1"}}', 422),
        ("heartbeat", '{"activity": {"permissions": 1.5}}', 422),
        ("heartbeat", '{"activity": {"turns": true}}', 422),
        ("heartbeat", '{"activity": [1, 2]}', 422),
        ("heartbeat", '{"activity": {"turns": NaN}}', 400),
        ("heartbeat", '{"drained": "yes"}', 422),
        ("heartbeat", '{"drained": 1}', 422),
    ],
)
async def test_non_finite_or_absurd_totals_are_refused_and_not_stored(
    settings: ControlPlaneSettings, route: str, body: str, status: int
) -> None:
    async with running(settings) as cp:
        r = await post_raw(cp, f"/api/nodes/n1/{route}", body, cp.callback("n1"))
        assert r.status_code == status, r.text
        assert "error" in r.json()
        assert count(cp, nodes) == 0


async def test_a_viewer_s_odd_session_id_does_not_stop_its_node_s_heartbeats(
    settings: ControlPlaneSettings,
) -> None:
    """A viewer chooses a session's id (any string); the heartbeat relays it as it is, so
    bounding it there would let one co-tenant make the node look dead to placement."""
    async with running(settings) as cp:
        odd = ["a\u0000b", "line\nbreak", "x" * 1000, "\u2028"]
        sessions = [{"session_id": sid, "state": "ready", "agent": "fake"} for sid in odd]
        body = {"sessions": sessions, "usage": CAPACITY}
        r = await cp.client.post("/api/nodes/n1/heartbeat", json=body, headers=cp.callback("n1"))
        assert r.status_code == 200, r.text
        node = (await cp.client.get("/api/nodes/n1", headers=cp.admin())).json()
        assert [s["session_id"] for s in node["sessions"]] == odd


async def test_a_poisoned_row_from_before_the_check_breaks_no_one(
    settings: ControlPlaneSettings,
) -> None:
    """Rows a node stored before the API refused such numbers: placement passes over the
    node (capacity unknown), and the admin reads answer. PostgreSQL's json cannot hold NaN,
    so there the poison is an absurd number instead."""
    async with running(settings) as cp:
        await cp.ready("good")
        poison = 10**30 if is_postgres(cp.plane.engine) else math.nan
        node_store.record_ready(cp.plane.engine, "bad", "1", CAPACITY | {"cpus": poison}, 1.0)
        node_store.record_heartbeat(cp.plane.engine, "bad", [], {"mem_total_bytes": poison}, 2.0)
        if not is_postgres(cp.plane.engine):
            nan_event = node_store.NodeEvent("s1", 1, 1.0, "acp.update", {"x": math.nan})
            node_store.store_events(cp.plane.engine, "bad", [nan_event], 3.0)

        task = {
            "agent": "claude",
            "prompt": "hi",
            "provider": "hetzner",
            "requirements": {"minVcpu": 1},
        }
        r = await cp.client.post("/api/tasks", json=task, headers=cp.user("alice"))
        assert r.status_code == 201, r.text
        r = await cp.client.get(  # the full explanation (the user's copy names no other node)
            f"/api/tasks/{r.json()['taskId']}",
            params={"owner": "alice", "explain": "full"},
            headers=cp.admin(),
        )
        placed = r.json()["placementExplanation"]
        (bad,) = [c for c in placed["candidates"] if c["nodeId"] == "bad"]
        assert bad["taken"] is False and "capacity unknown" in bad["reasons"][0]
        assert placed["decision"] == {"kind": "existing_node", "nodeId": "good"}

        r = await cp.client.get("/api/nodes/bad", headers=cp.admin())
        assert r.status_code == 200, r.text
        r = await cp.client.get("/api/nodes/bad/events", headers=cp.admin())
        assert r.status_code == 200, r.text
        if not is_postgres(cp.plane.engine):
            (got,) = r.json()["events"]
            assert got["data"] == {"x": "NaN"}


# Item 9: a node fills the database.


async def test_event_bounds_refuse_the_whole_batch(settings: ControlPlaneSettings) -> None:
    settings = settings.model_copy(update={"max_event_data_bytes": 1000})
    async with running(settings) as cp:
        headers = cp.callback("n1")
        post = "/api/nodes/n1/events"
        cases: list[tuple[list[dict[str, Any]], int, str]] = [
            ([event(1), event(2, data="x" * 1000)], 413, "events.1.data"),
            ([event(1), event(2, type="t" * 10_000)], 422, "events.1.type"),
            ([event(1, type="")], 422, "events.0.type"),
            ([event(1), event(2, session="s" * 10_000)], 422, "events.1.session_id"),
            ([event(1, session="a\nb")], 422, "events.0.session_id"),
            ([event(1), event(2**63)], 422, "events.1.seq"),
            ([event(1), event(2**64)], 422, "events.1.seq"),
            ([event(1), event(0)], 422, "events.1.seq"),
            ([event(1), event(2, ts=-1)], 422, "events.1.ts"),
            ([event(i) for i in range(1, 1002)], 422, "events"),
        ]
        for batch, status, where in cases:
            r = await cp.client.post(post, json={"events": batch}, headers=headers)
            assert r.status_code == status, (where, r.text)
            assert where in r.json()["error"], r.text
        # A NaN `ts` and nesting deeper than 64 are not JSON we take.
        for raw in (
            '{"events": [{"session_id": "s", "seq": 1, "ts": NaN, "type": "t"}]}',
            '{"events": [{"session_id": "s", "seq": 1, "ts": 1, "type": "t", "data": '
            + "[" * 100
            + "]" * 100
            + "}]}",
        ):
            r = await post_raw(cp, post, raw, headers)
            assert r.status_code == 400, r.text
        assert count(cp, node_events) == 0
        # Within the bounds, the same batch is taken; agents' big integers stay exact.
        ok = [event(1, data="x" * 990), event(2, type="t" * 64, data={"n": 2**70})]
        r = await cp.client.post(post, json={"events": ok}, headers=headers)
        assert r.json() == {"stored": 2, "duplicates": 0}


async def test_a_node_s_events_are_bounded_in_total(settings: ControlPlaneSettings) -> None:
    def size(ev: dict[str, Any]) -> int:
        return node_store.event_size(
            node_store.NodeEvent(ev["session_id"], ev["seq"], ev["ts"], ev["type"], ev["data"])
        )

    one = event(1, data="x" * 200)
    bound = 5 * size(one) + 10  # five such events fit, the sixth does not
    settings = settings.model_copy(update={"max_node_event_bytes": bound})
    async with running(settings) as cp:
        await cp.ready("n1")
        post = "/api/nodes/n1/events"
        batch = [event(seq, data="x" * 200) for seq in range(1, 5)]
        r = await cp.client.post(post, json={"events": batch}, headers=cp.callback("n1"))
        assert r.json() == {"stored": 4, "duplicates": 0}
        # A resent batch stores nothing, so it counts nothing.
        r = await cp.client.post(post, json={"events": batch}, headers=cp.callback("n1"))
        assert r.json() == {"stored": 0, "duplicates": 4}
        # Two more would pass the bound: the batch is refused whole (not one of two stored).
        more = [event(5, data="x" * 200), event(6, data="x" * 200)]
        r = await cp.client.post(post, json={"events": more}, headers=cp.callback("n1"))
        assert r.status_code == 413, r.text
        assert r.json()["limit"] == bound
        assert count(cp, node_events) == 4
        # One more fits; then the node is full.
        r = await cp.client.post(post, json={"events": more[:1]}, headers=cp.callback("n1"))
        assert r.json() == {"stored": 1, "duplicates": 0}
        r = await cp.client.post(post, json={"events": more[1:]}, headers=cp.callback("n1"))
        assert r.status_code == 413
        node = (await cp.client.get("/api/nodes/n1", headers=cp.admin())).json()
        assert node["event_bytes"] == 5 * size(one)
        # Another node has its own bound.
        r = await cp.client.post(
            post.replace("n1", "n2"), json={"events": more}, headers=cp.callback("n2")
        )
        assert r.json() == {"stored": 2, "duplicates": 0}
        # Counting its events does not make it a node that reported.
        assert (await cp.client.get("/api/nodes/n2", headers=cp.admin())).status_code == 404


async def test_the_admin_event_list_pages(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        batch = [event(seq, session=s) for s in ("a", "b.c") for seq in range(1, 13)]
        r = await cp.client.post(
            "/api/nodes/n1/events", json={"events": batch}, headers=cp.callback("n1")
        )
        assert r.json()["stored"] == 24
        seen: list[tuple[str, int]] = []
        pages = 0
        after: str | None = None
        while True:
            params = {"limit": "10"} | ({"after": after} if after else {})
            r = await cp.client.get("/api/nodes/n1/events", params=params, headers=cp.admin())
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["events"]) <= 10
            seen += [(e["session_id"], e["seq"]) for e in page["events"]]
            pages += 1
            after = page["next_after"]
            if after is None:
                break
        assert pages == 3
        assert seen == [(s, seq) for s in ("a", "b.c") for seq in range(1, 13)]
        # One session, paged the same way.
        r = await cp.client.get(
            "/api/nodes/n1/events",
            headers=cp.admin(),
            params={"session_id": "b.c", "limit": "5", "after": "5.b.c"},
        )
        assert [e["seq"] for e in r.json()["events"]] == [6, 7, 8, 9, 10]
        for bad in (
            {"limit": "0"},
            {"limit": "5001"},
            {"limit": "-1"},
            {"limit": "x"},
            {"limit": "9" * 30},
            {"after": "x"},
            {"after": "1."},
            {"after": "9" * 30 + ".a"},
        ):
            r = await cp.client.get("/api/nodes/n1/events", params=bad, headers=cp.admin())
            assert r.status_code == 422, (bad, r.text)


# Item 10: malformed values that gave 500.


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ('{"activateAfterS": Infinity}', 400),
        ('{"activateAfterS": NaN}', 400),
        ('{"activateAfterS": 1e400}', 400),
        ('{"activateAfterS": 1e12}', 422),
        ('{"activateAfterS": -1}', 422),
    ],
)
async def test_key_rotation_refuses_a_delay_it_cannot_keep(
    settings: ControlPlaneSettings, body: str, status: int
) -> None:
    async with running(settings) as cp:
        before = count(cp, signing_keys)
        r = await post_raw(cp, "/api/keys/rotate", body, cp.admin())
        assert r.status_code == status, r.text
        assert count(cp, signing_keys) == before  # no key with not_before=inf stored
        with pytest.raises(ValueError, match="activation delay"):
            cp.plane.tokens.keys.rotate(math.inf)
        assert count(cp, signing_keys) == before
        r = await post_raw(cp, "/api/keys/rotate", '{"activateAfterS": 60}', cp.admin())
        assert r.status_code == 201 and count(cp, signing_keys) == before + 1


async def test_a_version_that_is_not_a_small_integer_is_a_422(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.put_defaults("users", "alice", {"minVcpu": 1})
        for bad in ("9" * 20, "2147483648", "²", "-1", "1.5", ""):
            r = await cp.client.get(
                "/api/defaults/users/alice", params={"version": bad}, headers=cp.admin()
            )
            assert r.status_code == 422, (bad, r.text)
        r = await cp.client.get(
            "/api/defaults/users/alice", params={"version": "1"}, headers=cp.admin()
        )
        assert r.status_code == 200
        r = await cp.client.put(
            "/api/defaults/users/alice",
            json={"requirements": {}, "expectedVersion": 2**40},
            headers=cp.admin(),
        )
        assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    "body",
    [
        {"installationId": "x" * 10_000},
        {"installationId": "1" * 65},
        {"installationId": -5},
        {"installationId": 5, "accountLogin": "x" * 10_000},
    ],
)
async def test_a_github_link_longer_than_its_columns_is_a_422(
    settings: ControlPlaneSettings, body: dict[str, Any]
) -> None:
    """PostgreSQL refused the row (500); SQLite stored 10,000 characters."""
    async with running(settings) as cp:
        r = await cp.client.post("/api/github/installations", json=body, headers=cp.user("a"))
        assert r.status_code == 422, r.text
        r = await cp.client.get("/api/github/installations", headers=cp.user("a"))
        assert r.json() == {"installations": []}
