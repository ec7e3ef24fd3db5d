"""The callback endpoints over real HTTP on loopback: auth, refresh, ingest, credentials."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from control_plane.settings import ControlPlaneSettings
from tests.clock import FakeClock
from tests.control_plane.harness import foreign_plane, running
from tests.faults import EventFaults

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

HEARTBEAT = {"sessions": [{"session_id": "s1", "state": "ready", "agent": "fake"}], "usage": {}}


def events(session: str, *seqs: int) -> dict[str, object]:
    return {
        "events": [
            {"session_id": session, "seq": s, "ts": 1.5, "type": "acp.update", "data": {"n": s}}
            for s in seqs
        ]
    }


async def test_ready_then_node_is_recorded(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        body = {"version": "0.1.0", "capacity": {"vcpu": 2, "memory_mb": 4096}}
        r = await cp.client.post("/api/nodes/n1/ready", json=body, headers=cp.callback("n1"))
        assert (r.status_code, r.json()) == (200, {"ok": True})
        node = (await cp.client.get("/api/nodes/n1", headers=cp.admin())).json()
        assert (node["version"], node["capacity"]) == ("0.1.0", body["capacity"])


async def test_heartbeat_refreshes_token_past_half_life(settings: ControlPlaneSettings) -> None:
    clock = FakeClock(time.time())
    async with running(settings, clock) as cp:
        token = cp.plane.tokens.mint_callback_token("n1")
        r = await cp.client.post(
            "/api/nodes/n1/heartbeat", json=HEARTBEAT, headers=cp.bearer(token)
        )
        assert r.status_code == 200
        assert r.json() == {"interval_s": 30, "token": None, "drain": False}

        clock.advance(settings.callback_token_ttl_s / 2 + 1)
        r = await cp.client.post(
            "/api/nodes/n1/heartbeat", json=HEARTBEAT, headers=cp.bearer(token)
        )
        fresh = r.json()["token"]
        assert isinstance(fresh, str) and fresh != token
        claims = cp.plane.tokens.verify(fresh)
        assert (claims.sub, claims.exp) == ("n1", int(clock.now) + settings.callback_token_ttl_s)
        # The fresh token works after the old one expired.
        clock.advance(settings.callback_token_ttl_s / 2)
        r = await cp.client.post(
            "/api/nodes/n1/heartbeat", json=HEARTBEAT, headers=cp.bearer(token)
        )
        assert r.status_code == 401
        r = await cp.client.post(
            "/api/nodes/n1/heartbeat", json=HEARTBEAT, headers=cp.bearer(fresh)
        )
        assert r.status_code == 200
        node = (await cp.client.get("/api/nodes/n1", headers=cp.admin())).json()
        assert node["sessions"] == HEARTBEAT["sessions"]


async def test_a_refreshed_token_revokes_the_old_one_after_the_grace(
    settings: ControlPlaneSettings,
) -> None:
    clock = FakeClock(time.time())
    settings = settings.model_copy(update={"callback_token_revoke_grace_s": 30.0})
    async with running(settings, clock) as cp:
        old = cp.plane.tokens.mint_callback_token("n1")
        clock.advance(settings.callback_token_ttl_s / 2 + 1)
        r = await cp.client.post("/api/nodes/n1/heartbeat", json=HEARTBEAT, headers=cp.bearer(old))
        fresh = r.json()["token"]
        assert isinstance(fresh, str)

        async def post_events(token: str, seq: int) -> tuple[int, object]:
            r = await cp.client.post(
                "/api/nodes/n1/events", json=events("s1", seq), headers=cp.bearer(token)
            )
            return r.status_code, r.json()

        # Requests in flight with the old token still pass within the grace.
        assert (await post_events(old, 1))[0] == 200
        clock.advance(29)
        assert (await post_events(old, 2))[0] == 200
        clock.advance(1)
        assert await post_events(old, 3) == (401, {"error": "token revoked: a refresh replaced it"})
        r = await cp.client.post(
            "/api/nodes/n1/ready", json={"version": "1"}, headers=cp.bearer(old)
        )
        assert r.status_code == 401
        assert (await post_events(fresh, 3))[0] == 200
        stored = (await cp.client.get("/api/nodes/n1/events", headers=cp.admin())).json()
        assert [e["seq"] for e in stored["events"]] == [1, 2, 3]


async def test_a_callback_token_minted_around_the_ledger_is_refused(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        tokens = cp.plane.tokens
        # Signed with the control plane's own key, but never recorded.
        unrecorded, _ = tokens._callback_claims("n1", None)
        r = await cp.client.post(
            "/api/nodes/n1/ready", json={"version": "1"}, headers=cp.bearer(unrecorded)
        )
        assert (r.status_code, r.json()) == (401, {"error": "unauthorized"})


CALLBACK_CALLS = [
    ("/api/nodes/n1/ready", {"version": "1", "capacity": {}}),
    ("/api/nodes/n1/heartbeat", HEARTBEAT),
    ("/api/nodes/n1/events", events("s1", 1)),
    ("/api/nodes/n1/sessions/s1/agent-credentials", {"agent": "fake"}),
    ("/api/nodes/n1/sessions/s1/mcp-secrets", {}),
]


@pytest.mark.parametrize(("path", "body"), CALLBACK_CALLS)
async def test_callback_scope_enforcement(
    settings: ControlPlaneSettings, path: str, body: dict[str, object], tmp_path: Path
) -> None:
    clock = FakeClock(time.time())
    async with running(settings, clock) as cp:
        tokens = cp.plane.tokens
        cp.make_session("n1", "fake", session_id="s1")

        async def status(headers: dict[str, str]) -> tuple[int, object]:
            r = await cp.client.post(path, json=body, headers=headers)
            return r.status_code, r.json()

        assert await status({}) == (401, {"error": "unauthorized"})
        assert (await status(cp.callback("n2")))[0] == 403  # another node's token
        viewer = tokens.mint_viewer_token("n1", ["read", "write"])
        assert (await status(cp.bearer(viewer)))[0] == 403
        assert (await status(cp.user("alice")))[0] == 403
        assert (await status(cp.admin()))[0] == 403
        past = tokens.with_clock(lambda: clock.now - 2 * settings.callback_token_ttl_s)
        expired = past.mint_callback_token("n1")
        assert await status(cp.bearer(expired)) == (401, {"error": "token expired"})
        with foreign_plane(tmp_path, settings) as forger:
            forged = forger.tokens.mint_callback_token("n1")
        assert await status(cp.bearer(forged)) == (401, {"error": "unauthorized"})
        # An HS256 token whose "key" is the public JWK must not pass (pinned algorithm).
        kid = tokens.keys.signing_key().kid
        hs = jwt.encode(
            {"sub": "n1", "scope": "node-callback", "aud": "control-plane", "exp": 2**31},
            "x" * 32,
            algorithm="HS256",
            headers={"kid": kid},
        )
        assert (await status(cp.bearer(hs)))[0] == 401
        assert (await status(cp.callback("n1")))[0] == 200


async def test_events_are_stored_exactly_once(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        post = "/api/nodes/n1/events"
        r = await cp.client.post(post, json=events("s1", 1, 2, 3), headers=cp.callback("n1"))
        assert r.json() == {"stored": 3, "duplicates": 0}
        r = await cp.client.post(post, json=events("s1", 3, 4), headers=cp.callback("n1"))
        assert r.json() == {"stored": 1, "duplicates": 1}
        r = await cp.client.post(post, json=events("s1", 1, 2, 3, 4), headers=cp.callback("n1"))
        assert r.json() == {"stored": 0, "duplicates": 4}
        await cp.client.post(post, json=events("s2", 1), headers=cp.callback("n1"))

        r = await cp.client.get(post, params={"session_id": "s1"}, headers=cp.admin())
        stored = r.json()["events"]
        assert [e["seq"] for e in stored] == [1, 2, 3, 4]
        assert stored[0] == {
            "session_id": "s1",
            "seq": 1,
            "ts": 1.5,
            "type": "acp.update",
            "data": {"n": 1},
        }
        # The read endpoint wants an admin token: not the callback token, not a plain user.
        assert (await cp.client.get(post, headers=cp.callback("n1"))).status_code == 403
        assert (await cp.client.get(post, headers=cp.user("bob"))).status_code == 403
        assert len((await cp.client.get(post, headers=cp.admin())).json()["events"]) == 5


async def test_bad_bodies(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        h = cp.callback("n1")
        r = await cp.client.post("/api/nodes/n1/events", content=b"{", headers=h)
        assert r.status_code == 400
        r = await cp.client.post("/api/nodes/n1/events", json=events("s1", 0), headers=h)
        assert r.status_code == 422
        assert "seq" in r.json()["error"]


async def test_the_fault_wrapper_fails_every_other_batch(settings: ControlPlaneSettings) -> None:
    faults = EventFaults()
    async with running(settings, faults=faults) as cp:
        post = "/api/nodes/n1/events"
        faults.fail_every_other_events_batch = True
        codes = []
        for seq in range(1, 5):
            r = await cp.client.post(post, json=events("s", seq), headers=cp.callback("n1"))
            codes.append(r.status_code)
        assert codes == [500, 200, 500, 200]
        stored = (await cp.client.get(post, headers=cp.admin())).json()["events"]
        assert [e["seq"] for e in stored] == [2, 4]  # failed batches stored nothing

        faults.store_before_failing = True
        r = await cp.client.post(post, json=events("s", 5), headers=cp.callback("n1"))
        assert r.status_code == 500
        stored = (await cp.client.get(post, headers=cp.admin())).json()["events"]
        assert [e["seq"] for e in stored] == [2, 4, 5]  # stored, acknowledgement lost
        assert faults.stored_then_failed == 1
        faults.fail_every_other_events_batch = False
        r = await cp.client.post(post, json=events("s", 5), headers=cp.callback("n1"))
        assert r.json() == {"stored": 0, "duplicates": 1}


async def test_oversized_body_is_refused(settings: ControlPlaneSettings) -> None:
    settings = settings.model_copy(update={"max_body_bytes": 1000})
    async with running(settings) as cp:
        r = await cp.client.post(
            "/api/nodes/n1/events", json=events("s1", *range(1, 100)), headers=cp.callback("n1")
        )
        assert r.status_code == 413
        r = await cp.client.post(
            "/api/nodes/n1/events", json=events("s1", 1), headers=cp.callback("n1")
        )
        assert r.status_code == 200


async def test_concurrent_overlapping_batches_store_each_event_once(
    settings: ControlPlaneSettings,
) -> None:
    import anyio

    async with running(settings) as cp:
        results: list[dict[str, int]] = []

        async def send(seqs: range) -> None:
            r = await cp.client.post(
                "/api/nodes/n1/events", json=events("s", *seqs), headers=cp.callback("n1")
            )
            assert r.status_code == 200, r.text
            results.append(r.json())

        async with anyio.create_task_group() as tg:
            for start in range(1, 40, 5):
                tg.start_soon(send, range(start, start + 10))
        stored = (await cp.client.get("/api/nodes/n1/events", headers=cp.admin())).json()
        assert [e["seq"] for e in stored["events"]] == list(range(1, 46))
        assert sum(r["stored"] for r in results) == 45
        assert sum(r["stored"] + r["duplicates"] for r in results) == 80


async def test_heartbeat_stores_activity_and_answers_drain_once_the_node_drains(
    settings: ControlPlaneSettings,
) -> None:
    from sqlalchemy import insert, update

    from control_plane.storage import machines
    from control_plane.storage.db import node_machines

    async with running(settings) as cp:
        body = {
            **HEARTBEAT,
            "activity": {"turns": 1, "permissions": 0, "terminals": 2, "background": 3},
            "usage": {"activity": {"turns": 0}, "drained": True},  # not where it is read
        }
        r = await cp.client.post("/api/nodes/n1/heartbeat", json=body, headers=cp.callback("n1"))
        assert (r.status_code, r.json()["drain"]) == (200, False)  # no lifecycle row: never
        seen = machines.reported(cp.plane.engine, ["n1"])["n1"]
        assert (seen.busy, seen.drained) == (True, False)
        node = (await cp.client.get("/api/nodes/n1", headers=cp.admin())).json()
        assert node["usage"]["activity"] == body["activity"]

        with cp.plane.engine.begin() as conn:
            conn.execute(
                insert(node_machines).values(
                    node_id="n1", provider="hetzner", size="small", owner="alice",
                    phase="ready", requested_at=1.0, failures=0, version=0,
                )
            )  # fmt: skip
        r = await cp.client.post(
            "/api/nodes/n1/heartbeat", json=HEARTBEAT, headers=cp.callback("n1")
        )
        assert r.json()["drain"] is False
        seen = machines.reported(cp.plane.engine, ["n1"])["n1"]
        assert (seen.busy, seen.drained) == (False, False)  # an old daemon: no activity

        with cp.plane.engine.begin() as conn:
            conn.execute(update(node_machines).values(phase="draining"))
        drained = {**HEARTBEAT, "drained": True}
        r = await cp.client.post("/api/nodes/n1/heartbeat", json=drained, headers=cp.callback("n1"))
        assert r.json()["drain"] is True
        assert machines.reported(cp.plane.engine, ["n1"])["n1"].drained is True
        # another node's token cannot report for it
        r = await cp.client.post("/api/nodes/n1/heartbeat", json=drained, headers=cp.callback("n2"))
        assert r.status_code == 403
