"""The task API's contract without a node: the run's record, bad input as clear 4xx, the
user's asks recorded (cancel, close, follow-up, permission answers) and their refusals."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.dispatch.runs import PROMPT_MAX_BYTES
from control_plane.settings import ControlPlaneSettings
from tests.control_plane.harness import Running, running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def submit(cp: Running, user: str = "alice", **body: Any) -> dict[str, Any]:
    r = await cp.client.post(
        "/api/tasks", json={"agent": "fake", "prompt": "hello", **body}, headers=cp.user(user)
    )
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


async def get(cp: Running, task_id: str, user: str = "alice") -> dict[str, Any]:
    r = await cp.client.get(f"/api/tasks/{task_id}", headers=cp.user(user))
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def test_a_submitted_task_has_its_run_record(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        made = await submit(cp, taskId="t1", permissionPolicy="allow", followUps=True)
        assert (made["taskId"], made["status"]) == ("t1", "waiting_for_node")
        got = await get(cp, "t1")
        assert got["status"] == "waiting_for_node" and got["outcome"] is None
        assert (got["nodeId"], got["agent"]) == ("n1", "fake")
        assert got["sessionId"].startswith("s-")
        assert got["timings"]["submittedAt"] is not None
        assert got["timings"]["endedAt"] is None
        assert [t["status"] for t in got["transitions"]] == ["queued", "waiting_for_node"]
        assert got["transitions"][1]["cause"] == "placed on node n1"
        assert (got["permissionPolicy"], got["followUps"]) == ("allow", True)
        assert got["pendingPermissions"] == []
        r = await cp.client.get("/api/tasks/t1/events", headers=cp.user("alice"))
        assert r.json() == {"events": [], "next": 0}


BAD: list[tuple[dict[str, Any], int, str]] = [
    ({"agent": "no-such-agent"}, 422, "unknown agent 'no-such-agent'"),
    ({"prompt": ""}, 422, "prompt is empty"),
    ({"prompt": "   "}, 422, "prompt is empty"),
    ({"prompt": []}, 422, "no content blocks"),
    ({"prompt": [{"text": "x"}]}, 422, "not an ACP content block"),
    ({"prompt": [{"type": "text", "text": ""}]}, 422, "empty text block"),
    ({"prompt": 5}, 422, "prompt"),
    ({"prompt": "x" * (PROMPT_MAX_BYTES + 1)}, 413, "more than"),
    ({"permissionPolicy": "sometimes"}, 422, "permissionPolicy"),
    ({"followUps": "maybe"}, 422, "followUps"),
]


async def test_bad_submissions_are_refused_and_nothing_is_stored(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        for body, status, phrase in BAD:
            r = await cp.client.post(
                "/api/tasks",
                json={"agent": "fake", "prompt": "hi", "taskId": "t", **body},
                headers=cp.user("alice"),
            )
            assert r.status_code == status, (body, r.text)
            assert phrase in r.json()["error"], body
            assert (await cp.client.get("/api/tasks/t", headers=cp.admin())).status_code == 404


async def test_an_agent_a_node_reported_is_known(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        r = await cp.client.post(
            "/api/nodes/n1/ready",
            json={"version": "1", "capacity": {"cpus": 4, "agents": ["my-agent"]}},
            headers=cp.callback("n1"),
        )
        assert r.status_code == 200
        await submit(cp, agent="my-agent")


async def test_another_user_s_task_is_not_found(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        await submit(cp, taskId="t1")
        for method, path, body in [
            ("GET", "/api/tasks/t1", None),
            ("GET", "/api/tasks/t1/events", None),
            ("GET", "/api/tasks/t1/events/stream", None),
            ("POST", "/api/tasks/t1/cancel", None),
            ("POST", "/api/tasks/t1/close", None),
            ("POST", "/api/tasks/t1/prompts", {"prompt": "more"}),
            ("POST", "/api/tasks/t1/permissions/perm-1", {"optionId": "allow"}),
        ]:
            for path_ in (path, path.replace("t1", "nope")):
                r = await cp.client.request(method, path_, json=body, headers=cp.user("bob"))
                assert (r.status_code, r.json()) == (404, {"error": "no such task"}), path_
        assert (await get(cp, "t1", "alice"))["status"] == "waiting_for_node"


async def test_cancel_ends_a_waiting_task_once(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        await submit(cp, taskId="t1")
        r = await cp.client.post("/api/tasks/t1/cancel", headers=cp.user("alice"))
        assert (r.status_code, r.json()["status"]) == (202, "cancelled")
        got = await get(cp, "t1")
        assert got["outcome"] == {"kind": "cancelled", "reason": "cancelled by the user"}
        assert got["timings"]["endedAt"] is not None
        assert got["transitions"][-1]["cause"] == "cancelled by the user"
        r = await cp.client.post("/api/tasks/t1/cancel", headers=cp.user("alice"))
        assert r.status_code == 409 and "ended" in r.json()["error"]
        r = await cp.client.post(
            "/api/tasks/t1/prompts", json={"prompt": "x"}, headers=cp.user("alice")
        )
        assert r.status_code == 409


async def test_follow_up_and_close_only_while_awaiting_one(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        await submit(cp, taskId="t1", followUps=True)
        r = await cp.client.post(
            "/api/tasks/t1/prompts", json={"prompt": "more"}, headers=cp.user("alice")
        )
        assert r.status_code == 409 and "waiting_for_node" in r.json()["error"]
        r = await cp.client.post("/api/tasks/t1/close", headers=cp.user("alice"))
        assert r.status_code == 409
        r = await cp.client.post(
            "/api/tasks/t1/prompts", json={"prompt": ""}, headers=cp.user("alice")
        )
        assert r.status_code == 422


def permission_events(session_id: str, *, resolved: bool) -> list[dict[str, Any]]:
    request = {
        "sessionId": "acp-1",
        "toolCall": {"toolCallId": "c1", "title": "write a file"},
        "options": [
            {"optionId": "allow", "name": "Allow", "kind": "allow_once"},
            {"optionId": "reject", "name": "Reject", "kind": "reject_once"},
        ],
    }
    events = [
        {
            "session_id": session_id,
            "seq": 1,
            "ts": 1.0,
            "type": "permission.requested",
            "data": {"request_id": "perm-1", "request": request},
        },
    ]
    if resolved:
        events.append(
            {
                "session_id": session_id,
                "seq": 2,
                "ts": 2.0,
                "type": "permission.resolved",
                "data": {"request_id": "perm-1", "outcome": {"outcome": "cancelled"}},
            }
        )
    return events


@pytest.mark.parametrize("resolved", [False, True])
async def test_a_permission_answer_for_a_request_that_is_not_pending_is_refused(
    settings: ControlPlaneSettings, resolved: bool
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        made = await submit(cp, taskId="t1")
        r = await cp.client.post(
            "/api/nodes/n1/events",
            json={"events": permission_events(made["sessionId"], resolved=resolved)},
            headers=cp.callback("n1"),
        )
        assert r.status_code == 200, r.text
        h = cp.user("alice")
        url = "/api/tasks/t1/permissions"
        r = await cp.client.post(f"{url}/perm-9", json={"optionId": "allow"}, headers=h)
        assert r.status_code == 404 and "perm-9" in r.json()["error"]
        if resolved:
            r = await cp.client.post(f"{url}/perm-1", json={"optionId": "allow"}, headers=h)
            assert r.status_code == 409 and "not pending" in r.json()["error"]
            assert (await get(cp, "t1"))["pendingPermissions"] == []
            return
        pending = (await get(cp, "t1"))["pendingPermissions"]
        assert [p["requestId"] for p in pending] == ["perm-1"]
        assert pending[0]["toolCall"]["title"] == "write a file"
        r = await cp.client.post(f"{url}/perm-1", json={"optionId": "maybe"}, headers=h)
        assert r.status_code == 422 and "optionId must be one of" in r.json()["error"]
        r = await cp.client.post(f"{url}/perm-1", json={}, headers=h)
        assert r.status_code == 422
        r = await cp.client.post(f"{url}/perm-1", json={"optionId": "allow"}, headers=h)
        assert r.status_code == 200, r.text
        r = await cp.client.post(f"{url}/perm-1", json={"optionId": "reject"}, headers=h)
        assert r.status_code == 409 and "answered already" in r.json()["error"]
        assert (await get(cp, "t1"))["pendingPermissions"] == []


async def test_stored_events_page_in_seq_order(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        made = await submit(cp, taskId="t1")
        sid = made["sessionId"]
        batch = [
            {"session_id": sid, "seq": n, "ts": float(n), "type": "acp.update", "data": {"n": n}}
            for n in (3, 1, 2, 5)
        ]
        r = await cp.client.post(
            "/api/nodes/n1/events", json={"events": batch}, headers=cp.callback("n1")
        )
        assert r.status_code == 200
        h = cp.user("alice")
        r = await cp.client.get("/api/tasks/t1/events?after=1&limit=2", headers=h)
        assert [e["seq"] for e in r.json()["events"]] == [2, 3] and r.json()["next"] == 3
        r = await cp.client.get("/api/tasks/t1/events?after=3", headers=h)
        assert r.json() == {
            "events": [{"seq": 5, "type": "acp.update", "ts": 5.0, "data": {"n": 5}}],
            "next": 5,
        }
        for bad in ("after=-1", "limit=0", "limit=x", "limit=100000"):
            r = await cp.client.get(f"/api/tasks/t1/events?{bad}", headers=h)
            assert r.status_code == 422, bad


async def test_a_node_address_is_recorded_by_an_admin(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        url = "/api/nodes/n1/address"
        good = {
            "viewerUrl": "wss://n1.else.test:8080/v1/ws",
            "workspaceRoot": "/srv/workspaces",
        }
        r = await cp.client.put(url, json=good, headers=cp.user("alice"))
        assert r.status_code == 403
        r = await cp.client.get(url, headers=cp.admin())
        assert r.status_code == 404
        bad = {**good, "viewerUrl": "ws://n1.else.test:8080/v1/ws"}
        r = await cp.client.put(url, json=bad, headers=cp.admin())
        assert r.status_code == 422 and "loopback" in r.json()["error"]
        r = await cp.client.put(url, json={**good, "workspaceRoot": "rel"}, headers=cp.admin())
        assert r.status_code == 422
        r = await cp.client.put(url, json=good, headers=cp.admin())
        assert r.json() == {
            "viewerUrl": "wss://n1.else.test:8080/v1/ws",
            "workspaceRoot": "/srv/workspaces",
            "tlsName": "n1.nodes.vm-agent.internal",
        }


async def test_an_idle_stream_sends_its_status_then_keep_alives(
    settings: ControlPlaneSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.api import task_events

    monkeypatch.setattr(task_events, "KEEP_ALIVE_S", 0.3)
    async with running(settings) as cp:
        await cp.ready("n1")  # no address known: the task waits for its node
        await submit(cp, taskId="t1")
        lines: list[str] = []
        async with cp.client.stream(
            "GET", "/api/tasks/t1/events/stream", headers=cp.user("alice")
        ) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                lines.append(line)
                if line.startswith(": keep-alive"):
                    break
        assert lines[:2] == [
            "event: status",
            'data: {"status":"waiting_for_node","outcome":null}',
        ]
