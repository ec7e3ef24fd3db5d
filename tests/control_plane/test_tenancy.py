"""One tenant against the others (issue 28, items 2, 11 and 12), over HTTP on SQLite and
PostgreSQL: a user who tries to take the fleet, to read what is another's, or to learn
whether another's object exists, is refused, and the other users are unaffected."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from sqlalchemy import func, select

from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import agent_sessions, node_requests, tasks, workspaces
from tests.control_plane.harness import Running, running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LONER = {"agent": "fake", "requirements": {"exclusiveNode": True}}


def count(cp: Running, table: Any) -> int:
    with cp.plane.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


async def submit(cp: Running, user: str, body: dict[str, Any], **params: str) -> Any:
    """`POST /api/tasks` as `user` (with a prompt: the dispatcher requires one)."""
    body = {"prompt": "hi", **body}
    return await cp.client.post("/api/tasks", json=body, params=params, headers=cp.user(user))


async def test_one_user_at_the_node_quota_leaves_the_fleet_to_the_others(
    settings: ControlPlaneSettings,
) -> None:
    """The attack: tasks that each want a node to themselves, as fast as they go."""
    capped = settings.model_copy(update={"user_max_nodes": 3})
    async with running(capped) as cp:
        answers = [await submit(cp, "mallory", LONER) for _ in range(5)]
        assert [r.status_code for r in answers] == [201, 201, 201, 429, 429]
        refused = answers[3].json()
        assert refused["quota"] == "user_nodes"
        assert refused["setting"] == "CONTROL_PLANE_USER_MAX_NODES"
        assert refused["limit"] == 3
        assert refused["error"] == (
            "quota reached: the user holds 3 nodes (limit 3, CONTROL_PLANE_USER_MAX_NODES)"
        )
        # Nothing half-stored: three tasks, three node requests, three sessions.
        assert (count(cp, tasks), count(cp, node_requests), count(cp, agent_sessions)) == (
            3,
            3,
            3,
        )
        # Another user is placed as if mallory were not there.
        r = await submit(cp, "bob", LONER)
        assert r.status_code == 201, r.text

        # Release and ask again: the node she asked for is hers until it reports, so the
        # next task reuses it; no new node is asked for, and the quota still holds.
        ws = answers[0].json()["workspaceId"]
        r = await cp.client.post(f"/api/workspaces/{ws}/release", headers=cp.user("mallory"))
        assert r.status_code == 200
        again = await submit(cp, "mallory", LONER)
        assert (again.status_code, again.json()["nodeId"]) == (201, answers[0].json()["nodeId"])
        assert (await submit(cp, "mallory", LONER)).status_code == 429
        assert count(cp, node_requests) == 4  # mallory's three, bob's one


async def test_two_replicas_submitting_at_once_never_exceed_a_quota(
    settings: ControlPlaneSettings,
) -> None:
    """Two control planes on one database (each its own engine and pool), eight tasks of
    one user at once, split between them: exactly the quota is placed."""
    capped = settings.model_copy(update={"user_max_nodes": 3})
    other = capped.model_copy(update={"state_dir": settings.state_dir.parent / "replica-b"})
    async with running(capped) as a, running(other) as b:
        statuses: list[int] = []

        async def one(cp: Running) -> None:
            statuses.append((await submit(cp, "mallory", LONER)).status_code)

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, (a, b)[i % 2])
        assert sorted(statuses) == [201] * 3 + [429] * 5
        assert count(a, node_requests) == 3
        assert (await submit(b, "bob", LONER)).status_code == 201


async def test_tasks_in_flight_and_sessions_have_quotas_too(
    settings: ControlPlaneSettings,
) -> None:
    capped = settings.model_copy(update={"user_max_tasks": 2, "user_max_sessions": 3})
    async with running(capped) as cp:
        await cp.ready("n1", cpus=16, mem_gb=64, disk_gb=640)
        first = await submit(cp, "mallory", {"agent": "fake"})
        assert (await submit(cp, "mallory", {"agent": "fake"})).status_code == 201
        r = await submit(cp, "mallory", {"agent": "fake"})
        assert (r.status_code, r.json()["quota"]) == (429, "user_tasks")
        # Sessions: two from the tasks, one more by an explicit call, then no more.
        body = {"agent": "fake", "workspaceId": first.json()["workspaceId"]}
        path = "/api/nodes/n1/sessions"
        r = await cp.client.post(path, json=body, headers=cp.user("mallory"))
        assert r.status_code == 201, r.text
        r = await cp.client.post(path, json=body, headers=cp.user("mallory"))
        assert (r.status_code, r.json()["quota"]) == (429, "user_sessions")
        assert count(cp, agent_sessions) == 3
        # An admin making one for mallory counts against mallory's quota as well.
        r = await cp.client.post(path, json=body, headers=cp.admin())
        assert (r.status_code, r.json()["quota"]) == (429, "user_sessions")
        assert (await submit(cp, "bob", {"agent": "fake"})).status_code == 201


async def test_a_projects_quota_counts_every_users_tasks_in_it(
    settings: ControlPlaneSettings,
) -> None:
    capped = settings.model_copy(update={"project_max_tasks": 2})
    async with running(capped) as cp:
        await cp.ready("n1", cpus=16, mem_gb=64, disk_gb=640)
        await cp.put_defaults("projects", "p", {"minVcpu": 1}, user="alice")
        await share(cp, "projects", "alice", "p", ["bob"])
        assert (await submit(cp, "alice", {"agent": "fake", "projectId": "p"})).status_code == 201
        assert (
            await submit(cp, "bob", {"agent": "fake", "projectId": "alice/p"})
        ).status_code == 201
        r = await submit(cp, "alice", {"agent": "fake", "projectId": "p"})
        assert (r.status_code, r.json()["quota"]) == (429, "project_tasks")
        # Bob's own project of the same name is another project, with its own quota.
        await cp.put_defaults("projects", "p", {"minVcpu": 1}, user="bob")
        assert (await submit(cp, "bob", {"agent": "fake", "projectId": "p"})).status_code == 201
        assert (await submit(cp, "alice", {"agent": "fake"})).status_code == 201


async def test_a_users_answers_name_nothing_of_other_users_or_the_fleet(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1", cpus=16, mem_gb=64, disk_gb=640)
        await cp.ready("n2", cpus=16, mem_gb=64, disk_gb=640)
        alices = (await submit(cp, "alice", {"agent": "fake", "taskId": "a"})).json()
        r = await submit(cp, "bob", {"agent": "fake", "taskId": "b"})
        bobs = r.json()
        assert bobs["nodeId"] == alices["nodeId"]  # they share a node
        task = await cp.client.get("/api/tasks/b", headers=cp.user("bob"))
        ws = await cp.client.get(f"/api/workspaces/{bobs['workspaceId']}", headers=cp.user("bob"))
        for answer in (bobs, task.json(), ws.json()):
            text = repr(answer["placementExplanation"])
            for leak in (alices["workspaceId"], "alice", "free", "reasons", "n2"):
                assert leak not in text, (leak, text)
            assert answer["placementExplanation"]["summary"] == f"placed on {bobs['nodeId']}"
        # The full copy is the admins'.
        r = await cp.client.get("/api/tasks/b", params={"explain": "full"}, headers=cp.user("bob"))
        assert (r.status_code, r.json()["error"]) == (
            403,
            "forbidden: the full explanation is for admins",
        )
        r = await cp.client.get(
            "/api/tasks/b", params={"explain": "full", "owner": "bob"}, headers=cp.admin()
        )
        full = r.json()["placementExplanation"]
        assert alices["workspaceId"] in repr(full) and "free" in repr(full)
        r = await cp.client.get("/api/tasks/b", params={"explain": "x"}, headers=cp.user("bob"))
        assert r.status_code == 422


async def test_another_users_defaults_answer_as_if_they_did_not_exist(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.put_defaults("users", "alice", {"minVcpu": 3}, user="alice")
        await cp.put_defaults("users", "alice", {"minVcpu": 4}, user="alice")
        await cp.put_defaults("projects", "p", {"minVcpu": 3}, user="alice")
        bob = cp.user("bob")

        async def get(path: str, **params: str) -> tuple[int, Any]:
            r = await cp.client.get(path, params=params, headers=bob)
            return r.status_code, r.json()

        assert await get("/api/defaults/users/alice") == (
            404,
            {"error": "no stored defaults for user 'alice'"},
        )
        assert await get("/api/defaults/users/alice", version="1") == (
            404,
            {"error": "no stored defaults for user 'alice' version 1"},
        )
        # Alice's project and a project of nobody's: the same answer.
        assert await get("/api/defaults/projects/p", owner="alice") == await get(
            "/api/defaults/projects/p", owner="nobody"
        )
        assert (await get("/api/defaults/projects/p", owner="alice"))[0] == 404
        assert (await get("/api/defaults/projects/p", owner="alice", version="1"))[0] == 404
        # Alice herself, and an admin, read them.
        r = await cp.client.get("/api/defaults/users/alice", headers=cp.user("alice"))
        assert r.json()["version"] == 2
        r = await cp.client.get(
            "/api/defaults/projects/p", params={"owner": "alice"}, headers=cp.admin()
        )
        assert r.json()["owner"] == "alice"
        # A version past any integer column is a 422, not a 500.
        assert (await get("/api/defaults/users/bob", version="9" * 20))[0] == 422


async def share(cp: Running, kind: str, owner: str, layer_id: str, users: list[str]) -> None:
    r = await cp.client.put(
        f"/api/defaults/{kind}/{layer_id}/shares",
        params={"owner": owner},
        json={"users": users},
        headers=cp.admin(),
    )
    assert r.status_code == 200, r.text


async def test_names_are_per_owner_and_another_users_layer_only_if_shared(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.put_defaults("projects", "p", {"minVcpu": 3}, user="alice")
        # Bob's `p` is his own, not a refusal, and not alice's.
        mine = await cp.put_defaults("projects", "p", {"minVcpu": 1}, user="bob")
        assert (mine["owner"], mine["version"]) == ("bob", 1)
        r = await submit(cp, "bob", {"agent": "fake", "projectId": "p"})
        assert r.json()["reservation"]["cpuMillis"] == 1000
        assert r.json()["provenance"]["minVcpu"] == {
            "layer": "project",
            "layerId": "p",
            "version": 1,
        }
        # Alice's, not shared with bob: the same answer as a project nobody has.
        theirs = await submit(cp, "bob", {"agent": "fake", "projectId": "alice/p"})
        nobodys = await submit(cp, "bob", {"agent": "fake", "projectId": "nobody/p"})
        assert (theirs.status_code, nobodys.status_code) == (422, 422)
        assert theirs.json()["error"] == "no stored defaults for project 'alice/p'"
        assert nobodys.json()["error"] == "no stored defaults for project 'nobody/p'"
        assert count(cp, tasks) == 1

        # Only an admin shares, only a stored layer, only projects, profiles and triggers.
        path = "/api/defaults/projects/p/shares"
        r = await cp.client.put(
            path, params={"owner": "alice"}, json={"users": ["bob"]}, headers=cp.user("alice")
        )
        assert r.status_code == 403
        r = await cp.client.put(
            "/api/defaults/projects/q/shares",
            params={"owner": "alice"},
            json={"users": ["bob"]},
            headers=cp.admin(),
        )
        assert r.status_code == 404
        r = await cp.client.put(
            "/api/defaults/users/alice/shares", json={"users": ["bob"]}, headers=cp.admin()
        )
        assert r.status_code == 422
        r = await cp.client.put(path, json={"users": ["bob"]}, headers=cp.admin())
        assert (r.status_code, r.json()["error"]) == (
            422,
            "owner is required: whose layer is shared",
        )
        r = await cp.client.put(
            path, params={"owner": "alice"}, json={"users": ["a b"]}, headers=cp.admin()
        )
        assert r.status_code == 422

        await share(cp, "projects", "alice", "p", ["bob"])
        r = await submit(cp, "bob", {"agent": "fake", "projectId": "alice/p"})
        assert r.status_code == 201, r.text
        assert r.json()["reservation"]["cpuMillis"] == 3000
        assert r.json()["provenance"]["minVcpu"]["layerId"] == "alice/p"
        got = await cp.client.get(
            "/api/defaults/projects/p", params={"owner": "alice"}, headers=cp.user("bob")
        )
        assert got.json()["requirements"] == {"minVcpu": 3.0}
        assert "sharedWith" not in got.json()  # who else: the owner's and the admins' to know
        own = await cp.client.get("/api/defaults/projects/p", headers=cp.user("alice"))
        assert own.json()["sharedWith"] == ["bob"]
        # Shared is not writable: bob still stores only under his own name.
        r = await cp.client.put(
            "/api/defaults/projects/p",
            params={"owner": "alice"},
            json={"requirements": {"minVcpu": 9}},
            headers=cp.user("bob"),
        )
        assert r.status_code == 403
        # Carol was not named: still nothing there for her.
        r = await submit(cp, "carol", {"agent": "fake", "projectId": "alice/p"})
        assert r.status_code == 422
        # The share is taken back: bob's next task cannot use it.
        await share(cp, "projects", "alice", "p", [])
        assert (
            await submit(cp, "bob", {"agent": "fake", "projectId": "alice/p"})
        ).status_code == 422


async def test_task_ids_are_per_owner_and_tell_nothing_of_anothers(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        a = await submit(cp, "alice", {"agent": "fake", "taskId": "t1"})
        b = await submit(cp, "bob", {"agent": "fake", "taskId": "t1"})
        assert (a.status_code, b.status_code) == (201, 201)  # as if alice had none
        assert (await submit(cp, "bob", {"agent": "fake", "taskId": "t1"})).status_code == 409
        for user, made in (("alice", a), ("bob", b)):
            r = await cp.client.get("/api/tasks/t1", headers=cp.user(user))
            assert (r.json()["owner"], r.json()["workspaceId"]) == (
                user,
                made.json()["workspaceId"],
            )
        await submit(cp, "alice", {"agent": "fake", "taskId": "only-alice"})
        theirs = await cp.client.get("/api/tasks/only-alice", headers=cp.user("bob"))
        nobodys = await cp.client.get("/api/tasks/nobody", headers=cp.user("bob"))
        assert (theirs.status_code, theirs.json()) == (nobodys.status_code, nobodys.json())
        assert theirs.status_code == 404
        # An admin names whose task it is.
        r = await cp.client.get(
            "/api/tasks/only-alice", params={"owner": "alice"}, headers=cp.admin()
        )
        assert r.json()["owner"] == "alice"
        # Workspaces: another's and none at all answer alike, for reading and releasing.
        ws = a.json()["workspaceId"]
        for method, suffix in (("GET", ""), ("POST", "/release")):
            theirs = await cp.client.request(
                method, f"/api/workspaces/{ws}{suffix}", headers=cp.user("bob")
            )
            nobodys = await cp.client.request(
                method, f"/api/workspaces/ws-nope{suffix}", headers=cp.user("bob")
            )
            assert (theirs.status_code, theirs.json()) == (nobodys.status_code, nobodys.json())
        with cp.plane.engine.connect() as conn:
            state = conn.execute(
                select(workspaces.c.state).where(workspaces.c.workspace_id == ws)
            ).scalar_one()
        assert state == "active"
