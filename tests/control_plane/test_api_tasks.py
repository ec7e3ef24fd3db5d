"""Task submission over HTTP: stored layers resolved, placement into a workspace on a node,
the audit on tasks and workspaces (straight from the database), and refusals."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from sqlalchemy import select

from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import agent_sessions, node_requests, tasks, workspaces
from tests.control_plane.harness import Running, running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

TASK: dict[str, Any] = {
    "taskId": "task-1",
    "agent": "claude",
    "prompt": "fix the bug",
    "provider": "hetzner",
    "requirements": {"minVcpu": 3, "exclusiveNode": False},
    "triggerId": "trig-9",
    "agentProfileId": "prof-2",
    "projectId": "proj-1",
}


async def store_layers(cp: Running) -> None:
    await cp.put_defaults("triggers", "trig-9", {}, user="alice")
    await cp.put_defaults("agent-profiles", "prof-2", {"minMemoryGb": 6, "minVcpu": 1}, "alice")
    await cp.put_defaults("projects", "proj-1", {"minDiskGb": 50}, user="alice")
    await cp.put_defaults("projects", "proj-1", {"minDiskGb": 60}, user="alice")  # version 2
    await cp.put_defaults("users", "alice", {"maxCoTenants": 1}, user="alice")
    await cp.put_defaults("users", "bob", {"maxCoTenants": 3, "minMemoryGb": 1}, user="bob")


def full_explanation(cp: Running, task: dict[str, Any]) -> dict[str, Any]:
    """The full explanation stored for a task (the user's answer has only their copy)."""
    with cp.plane.engine.connect() as conn:
        doc = conn.execute(
            select(tasks.c.placement_explanation_json).where(
                tasks.c.owner == task["owner"], tasks.c.client_task_id == task["taskId"]
            )
        ).scalar_one()
    found: dict[str, Any] = json.loads(doc)
    return found


def candidate(cp: Running, task: dict[str, Any], node_id: str) -> dict[str, Any]:
    """The entry for `node_id` in a task's (full) placement explanation."""
    (entry,) = [c for c in full_explanation(cp, task)["candidates"] if c["nodeId"] == node_id]
    found: dict[str, Any] = entry
    return found


def rows(cp: Running, table: Any) -> list[dict[str, Any]]:
    with cp.plane.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


async def test_a_task_resolves_the_stored_layers_and_is_placed_on_a_node(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await store_layers(cp)
        await cp.ready("n1", cpus=4, mem_gb=8, disk_gb=80)
        r = await cp.client.post("/api/tasks", json=TASK, headers=cp.user("alice"))
        assert r.status_code == 201, r.text
        made = r.json()
        reservation = {
            "cpuMillis": 3000,
            "memoryMb": 6144,
            "diskMb": 61440,
            "exclusiveNode": False,
            "maxCoTenants": 1,
            "source": "task",
            "sourceId": "task-1",
            "sourceVersion": None,
            "version": 2,
        }
        assert made["reservation"] == reservation
        assert made["provenance"] == {
            "minVcpu": {"layer": "task", "layerId": "task-1", "version": None},
            "minMemoryGb": {"layer": "agent_profile", "layerId": "prof-2", "version": 1},
            "minDiskGb": {"layer": "project", "layerId": "proj-1", "version": 2},
            "exclusiveNode": {"layer": "task", "layerId": "task-1", "version": None},
            # The user layer is the token's user (alice), not bob, nor anything in the body.
            "maxCoTenants": {"layer": "user", "layerId": "alice", "version": 1},
        }
        assert (made["requestedVmSize"], made["vmSizeSource"]) == ("medium", "reservation")
        assert (made["owner"], made["agent"], made["nodeId"]) == ("alice", "claude", "n1")
        # The user's copy: the decision and their own workspace on the node taken.
        assert made["placementExplanation"] == {
            "version": 1,
            "copy": "user",
            "demand": full_explanation(cp, made)["demand"],
            "candidates": [
                {
                    "nodeId": "n1",
                    "status": "reported",
                    "taken": True,
                    "tenants": [],  # placed before its own workspace existed
                }
            ],
            "decision": {"kind": "existing_node", "nodeId": "n1"},
            "summary": "placed on n1",
        }
        explanation = full_explanation(cp, made)
        assert explanation["decision"] == {"kind": "existing_node", "nodeId": "n1"}
        assert [c["nodeId"] for c in explanation["candidates"]] == ["n1"]
        assert explanation["summary"].startswith("placed on n1: fits")

        # The columns themselves, straight from the database: tasks and workspaces.
        (task_row,) = rows(cp, tasks)
        (ws_row,) = rows(cp, workspaces)
        assert ws_row["workspace_id"] == made["workspaceId"] == task_row["workspace_id"]
        assert (ws_row["node_id"], ws_row["owner"], ws_row["state"]) == ("n1", "alice", "active")
        for row in (task_row, ws_row):
            assert row["requested_vm_size"] == "medium"
            assert row["vm_size_source"] == "reservation"
            assert json.loads(row["requirements_json"]) == TASK["requirements"]
            assert json.loads(row["reservation_json"]) == reservation
            assert json.loads(row["reservation_provenance_json"]) == made["provenance"]
            assert json.loads(row["placement_explanation_json"]) == explanation
        # The task's agent session on that node: the one its credentials are handed out for.
        (session,) = rows(cp, agent_sessions)
        assert session["session_id"] == made["sessionId"]
        assert (session["node_id"], session["agent"], session["owner"]) == (
            "n1",
            "claude",
            "alice",
        )

        again = await cp.client.get("/api/tasks/task-1", headers=cp.user("alice"))
        # the record as submitted, and its run (status, timings, transitions: tests/dispatch)
        assert {k: v for k, v in again.json().items() if k in made} == made
        ws = await cp.client.get(
            f"/api/workspaces/{made['workspaceId']}",
            params={"explain": "full"},
            headers=cp.admin(),
        )
        assert ws.json()["placementExplanation"] == explanation
        full = await cp.client.get(
            "/api/tasks/task-1", params={"explain": "full", "owner": "alice"}, headers=cp.admin()
        )
        assert full.json()["placementExplanation"] == explanation
        # Another user does not see it.
        assert (await cp.client.get("/api/tasks/task-1", headers=cp.user("bob"))).status_code == 404

        dup = await cp.client.post("/api/tasks", json=TASK, headers=cp.user("alice"))
        assert dup.status_code == 409


async def test_a_layer_change_is_a_new_version_in_later_provenance(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.put_defaults("projects", "p", {"minVcpu": 1}, user="alice")
        first = await cp.client.post(
            "/api/tasks",
            json={"agent": "fake", "prompt": "hi", "projectId": "p"},
            headers=cp.user("alice"),
        )
        await cp.put_defaults("projects", "p", {"minVcpu": 2}, user="alice")
        second = await cp.client.post(
            "/api/tasks",
            json={"agent": "fake", "prompt": "hi", "projectId": "p"},
            headers=cp.user("alice"),
        )
        assert first.json()["provenance"]["minVcpu"]["version"] == 1
        assert second.json()["provenance"]["minVcpu"]["version"] == 2
        assert first.json()["reservation"]["cpuMillis"] == 1000
        assert second.json()["reservation"]["cpuMillis"] == 2000
        # Platform defaults: an id and a version too.
        assert second.json()["provenance"]["minDiskGb"] == {
            "layer": "platform",
            "layerId": "platform",
            "version": 1,
        }
        platform = await cp.client.post(
            "/api/tasks", json={"agent": "fake", "prompt": "hi"}, headers=cp.user("u")
        )
        assert platform.json()["reservation"]["source"] == "platform"
        assert platform.json()["reservation"]["sourceId"] == "platform"


async def test_no_room_asks_for_a_new_node_and_the_next_task_packs_into_it(
    settings: ControlPlaneSettings,
) -> None:
    half = {
        "agent": "fake",
        "prompt": "hi",
        "requirements": {"minVcpu": 1, "minMemoryGb": 2, "minDiskGb": 20},
    }
    async with running(settings) as cp:
        await cp.ready("tiny", cpus=1, mem_gb=1, disk_gb=20)
        r = await cp.client.post("/api/tasks", json=half, headers=cp.user("alice"))
        assert r.status_code == 201, r.text
        first = r.json()
        decision = first["placementExplanation"]["decision"]
        assert decision["kind"] == "new_node"
        assert (decision["provider"], decision["size"], decision["sizeSource"]) == (
            "hetzner",
            "small",
            "reservation",
        )
        assert first["nodeId"] == decision["nodeId"] != "tiny"
        (tiny,) = full_explanation(cp, first)["candidates"]
        assert "memory: 1024 MB free < 2048 MB asked" in tiny["reasons"]
        (asked,) = rows(cp, node_requests)
        assert (asked["node_id"], asked["size"], asked["state"]) == (
            first["nodeId"],
            "small",
            "pending",
        )
        assert asked["workspace_id"] == first["workspaceId"]

        # The next one fits beside the first on the node asked for: it goes there.
        r = await cp.client.post("/api/tasks", json=half, headers=cp.user("bob"))
        second = r.json()
        assert second["nodeId"] == first["nodeId"]
        entry = candidate(cp, second, first["nodeId"])
        assert (entry["status"], entry["taken"]) == ("requested", True)
        assert entry["tenants"] == [first["workspaceId"]]
        assert len(rows(cp, node_requests)) == 1

        # The node reports: its own capacity now counts (full, with the two).
        await cp.ready(first["nodeId"], cpus=2, mem_gb=4, disk_gb=40)
        r = await cp.client.post("/api/tasks", json=half, headers=cp.user("carol"))
        third = r.json()
        entry = candidate(cp, third, first["nodeId"])
        assert entry["status"] == "reported"
        assert "cpu: 0m free < 1000m asked" in entry["reasons"]
        assert full_explanation(cp, third)["decision"]["kind"] == "new_node"
        assert len(rows(cp, node_requests)) == 2


async def test_exclusive_and_co_tenant_limits_and_release(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        await cp.ready("big", cpus=16, mem_gb=64, disk_gb=640)
        loner = {"agent": "fake", "prompt": "hi", "requirements": {"exclusiveNode": True}}
        r = await cp.client.post("/api/tasks", json=loner, headers=cp.user("alice"))
        assert r.json()["nodeId"] == "big"
        ws_id = r.json()["workspaceId"]
        r = await cp.client.post(
            "/api/tasks", json={"agent": "fake", "prompt": "hi"}, headers=cp.user("bob")
        )
        other = r.json()
        assert other["nodeId"] != "big"
        big = candidate(cp, other, "big")
        assert any("has the node to itself" in reason for reason in big["reasons"])

        # Released, the node is free again; the released workspace's session has ended.
        r = await cp.client.post(f"/api/workspaces/{ws_id}/release", headers=cp.user("bob"))
        assert r.status_code == 404  # not bob's
        r = await cp.client.post(f"/api/workspaces/{ws_id}/release", headers=cp.user("alice"))
        assert (r.json()["state"], r.json()["releasedAt"] is not None) == ("released", True)
        ended = [s for s in rows(cp, agent_sessions) if s["workspace_id"] == ws_id]
        assert ended[0]["ended_at"] is not None
        pair = {"agent": "fake", "prompt": "hi", "requirements": {"maxCoTenants": 1}}
        r = await cp.client.post("/api/tasks", json=pair, headers=cp.user("dave"))
        assert r.json()["nodeId"] == "big"
        r = await cp.client.post(
            "/api/tasks", json={"agent": "fake", "prompt": "hi"}, headers=cp.user("erin")
        )
        assert r.json()["nodeId"] == "big"  # one co-tenant: allowed
        r = await cp.client.post(
            "/api/tasks", json={"agent": "fake", "prompt": "hi"}, headers=cp.user("fay")
        )
        big = candidate(cp, r.json(), "big")
        assert any("allows at most 1 co-tenants" in reason for reason in big["reasons"])


async def test_refusals_name_why(settings: ControlPlaneSettings) -> None:
    limited = settings.model_copy(update={"max_nodes": 1})
    async with running(limited) as cp:
        h = cp.user("alice")
        await cp.ready("n1", cpus=2, mem_gb=4, disk_gb=40)
        big = {"agent": "fake", "prompt": "hi", "requirements": {"minVcpu": 4}}
        r = await cp.client.post("/api/tasks", json=big, headers=h)
        assert r.status_code == 422
        body = r.json()  # the user's copy: nothing of the fleet
        assert body["error"].startswith("cannot place the task: no node may take it")
        assert body["placement"]["decision"] == {"kind": "unplaceable"}
        assert body["placement"]["candidates"] == []
        r = await cp.client.post(
            "/api/tasks", json=big, params={"explain": "full"}, headers=cp.admin()
        )
        body = r.json()  # an admin's full copy says why
        assert "node limit (1) is reached" in body["error"]
        (n1,) = body["placement"]["candidates"]
        assert "cpu: 2000m free < 4000m asked" in n1["reasons"]
        assert rows(cp, tasks) == [] and rows(cp, workspaces) == []  # nothing half-stored

        cases: list[tuple[dict[str, Any], str]] = [
            (
                {
                    "agent": "fake",
                    "prompt": "hi",
                    "provider": "gcp",
                    "requirements": {"minDiskGb": 51},
                },
                "no gcp size",
            ),
            (
                {"agent": "fake", "prompt": "hi", "projectId": "nope"},
                "no stored defaults for project 'nope'",
            ),
            ({"agent": "fake", "prompt": "hi", "provider": "aws"}, "unknown provider 'aws'"),
            ({"agent": "fake", "prompt": "hi", "vmSize": "huge"}, "vmSize must be one of"),
            (
                {
                    "agent": "fake",
                    "prompt": "hi",
                    "vmSize": "small",
                    "requirements": {"minVcpu": 3},
                },
                "does not fit",
            ),
            ({"agent": "fake", "prompt": "hi", "requirements": {"gpus": 1}}, "unknown field"),
            ({"agent": "fake", "prompt": "hi", "user": {"id": "x", "requirements": {}}}, "user"),
            ({"requirements": {}}, "agent"),
            ({"agent": "bad name"}, "agent"),
        ]
        for submission, phrase in cases:
            r = await cp.client.post("/api/tasks", json=submission, headers=h)
            assert r.status_code == 422, (submission, r.text)
            assert phrase in r.json()["error"], (submission, r.json())
        r = await cp.client.post(
            "/api/tasks",
            json={"agent": "fake", "prompt": "hi", "requirements": {"maxCoTenants": 0}},
            headers=h,
        )
        assert (r.json()["layer"], r.json()["field"]) == ("task", "maxCoTenants")


async def test_explicit_vm_size(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        r = await cp.client.post(
            "/api/tasks",
            json={
                "taskId": "t2",
                "agent": "fake",
                "prompt": "hi",
                "vmSize": "large",
                "provider": "gcp",
            },
            headers=cp.user("alice"),
        )
        made = r.json()
        assert (made["requestedVmSize"], made["vmSizeSource"]) == ("large", "task")
        decision = made["placementExplanation"]["decision"]
        assert (decision["size"], decision["sizeSource"]) == ("large", "task")


async def test_concurrent_placements_never_share_the_same_room(
    settings: ControlPlaneSettings,
) -> None:
    """Room for exactly two tasks on one node; eight submitted at once: two land there."""
    async with running(settings) as cp:
        await cp.ready("n1", cpus=4, mem_gb=8, disk_gb=80)
        placed: list[str] = []

        async def submit(i: int) -> None:
            r = await cp.client.post(
                "/api/tasks", json={"agent": "fake", "prompt": "hi"}, headers=cp.user(f"user-{i}")
            )
            assert r.status_code == 201, r.text
            placed.append(r.json()["nodeId"])

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(submit, i)
        assert placed.count("n1") == 2
        assert len(placed) == 8
