"""A task submitted to the control plane runs on a real daemon (the fake agent) and is
followed to its outcome: completed, a permission answered through the control plane, a
follow-up, a cancel, an agent without credentials (auth_required), a crash; events read
back. One control plane and daemon serve the module's tests, one task after another (the
node holds one at a time, as the next test's placement shows)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from sqlalchemy import select

from control_plane.storage.db import tasks, workspaces
from tests.dispatch.harness import Stack, stack

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack(tmp_path_factory.mktemp("e2e")) as s:
        yield s


async def room_freed(s: Stack) -> None:
    """Once no workspace is active: the next task needs the node's room, and each task
    frees it once it ended."""
    with anyio.fail_after(60):
        while True:
            with s.plane.engine.connect() as conn:
                active = conn.execute(
                    select(workspaces.c.workspace_id).where(workspaces.c.state == "active")
                ).all()
            if not active:
                return
            await anyio.sleep(0.05)


@pytest.fixture
async def s(shared: Stack) -> AsyncIterator[Stack]:
    yield shared
    await room_freed(shared)


async def test_a_task_runs_to_completed_and_its_events_read_back(s: Stack) -> None:
    await s.submit(taskId="e-done", agent="fake", prompt="hello there")
    done = await s.until("e-done", "completed", "failed", "crashed", "timed_out")
    assert done["status"] == "completed", done
    assert done["outcome"]["kind"] == "completed"
    assert done["outcome"]["stopReason"] == "end_turn"
    # The outcome may come over the connection before the outbox brings the updates.
    done = await s.eventually("e-done", lambda t: t["timings"]["firstUpdateAt"] is not None)
    timings = done["timings"]
    assert all(timings[k] for k in ("submittedAt", "nodeReadyAt", "endedAt"))
    assert [t["status"] for t in done["transitions"]] == [
        "queued", "waiting_for_node", "starting", "running", "completed",
    ]  # fmt: skip
    events = await s.events_until("e-done", "prompt.finished")
    types = [e["type"] for e in events]
    assert "prompt.started" in types and "prompt.finished" in types
    started = next(e for e in events if e["type"] == "prompt.started")
    assert started["data"]["prompt"] == [{"type": "text", "text": "hello there"}]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)


async def test_a_permission_request_is_answered_through_the_control_plane(s: Stack) -> None:
    await s.submit(taskId="e-perm", agent="fake-tools", prompt="write it")
    asked = await s.eventually("e-perm", lambda t: bool(t["pendingPermissions"]))
    (pending,) = asked["pendingPermissions"]
    assert asked["status"] == "running"
    options = {o["kind"]: o["optionId"] for o in pending["options"]}
    r = await s.client.post(
        f"/api/tasks/e-perm/permissions/{pending['requestId']}",
        json={"optionId": options["allow_once"]},
        headers=s.user(),
    )
    assert r.status_code == 200, r.text
    done = await s.until("e-perm", "completed", "failed", "crashed", "timed_out", "cancelled")
    assert done["status"] == "completed", done
    events = await s.events_until("e-perm", "permission.resolved")
    (resolved,) = [e for e in events if e["type"] == "permission.resolved"]
    assert resolved["data"]["outcome"] == {
        "outcome": "selected",
        "optionId": options["allow_once"],
    }


async def test_a_policy_answers_permissions_and_a_follow_up_reuses_the_session(s: Stack) -> None:
    await s.submit(
        taskId="e-policy",
        agent="fake-tools",
        prompt="one",
        permissionPolicy="reject",
        followUps=True,
    )
    first = await s.until("e-policy", "awaiting_follow_up", "failed", "crashed", "completed")
    assert first["status"] == "awaiting_follow_up", first
    events = await s.events_until("e-policy", "permission.resolved")
    (resolved,) = [e for e in events if e["type"] == "permission.resolved"]
    assert resolved["data"]["outcome"]["optionId"].startswith("reject")
    r = await s.client.post("/api/tasks/e-policy/prompts", json={"prompt": "two"}, headers=s.user())
    assert r.status_code == 202, r.text
    prompt_id = r.json()["promptId"]
    await s.eventually(
        "e-policy",
        lambda t: t["status"] == "awaiting_follow_up" and t["outcome"]["promptId"] == prompt_id,
    )
    r = await s.client.post("/api/tasks/e-policy/close", headers=s.user())
    assert (r.status_code, r.json()["status"]) == (200, "completed")
    events = await s.events_until("e-policy", "prompt.finished")
    started = [e["data"]["prompt_id"] for e in events if e["type"] == "prompt.started"]
    assert started[-1] == prompt_id and len(started) == 2  # one session, two prompts
    r = await s.client.post("/api/tasks/e-policy/prompts", json={"prompt": "3"}, headers=s.user())
    assert r.status_code == 409


async def test_cancel_reaches_the_running_prompt(s: Stack) -> None:
    await s.submit(taskId="e-cancel", agent="fake-slow", prompt="take your time")
    await s.eventually("e-cancel", lambda t: t["timings"]["firstUpdateAt"] is not None)
    r = await s.client.post("/api/tasks/e-cancel/cancel", headers=s.user())
    assert r.status_code == 202, r.text
    done = await s.until("e-cancel", "cancelled", "completed", "failed", "crashed")
    assert done["status"] == "cancelled", done
    assert done["outcome"]["kind"] == "cancelled"
    r = await s.client.post("/api/tasks/e-cancel/cancel", headers=s.user())
    assert r.status_code == 409


async def test_an_agent_without_credentials_ends_auth_required(s: Stack) -> None:
    await s.submit(taskId="e-auth", agent="fake-auth", prompt="hello")
    done = await s.until("e-auth", "auth_required", "failed", "completed", "crashed")
    assert done["status"] == "auth_required", done
    assert done["outcome"]["authMethods"], done["outcome"]
    assert done["reason"]


async def test_an_agent_that_crashes_unrecoverably_ends_the_task_crashed(s: Stack) -> None:
    await s.submit(taskId="e-crash", agent="fake-crash", prompt="boom")
    done = await s.until("e-crash", "crashed", "failed", "completed", "timed_out")
    assert done["status"] == "crashed", done
    assert done["outcome"]["kind"] == "crashed"
    events = await s.events_until("e-crash", "agent.crash_report")
    (report,) = [e["data"] for e in events if e["type"] == "agent.crash_report"]
    assert report["recovered"] is False


async def test_an_ended_task_frees_its_room_on_the_node(s: Stack) -> None:
    # The node holds one task at a time (the platform's default reservation is its size
    # here, or bigger than half of it): the next is placed there only once the first ended.
    for task_id in ("r1", "r2", "r3"):
        made = await s.submit(taskId=task_id, agent="fake", prompt="next")
        assert made["nodeId"] == "node-1", made["placementExplanation"]
        done = await s.until(task_id, "completed", "failed", "crashed")
        assert done["status"] == "completed"
        ws = f"/api/workspaces/{done['workspaceId']}"
        with anyio.fail_after(30):
            while (await s.client.get(ws, headers=s.user())).json()["state"] != "released":
                await anyio.sleep(0.05)


async def test_bobs_t1_and_alices_t1_are_two_tasks_run_by_the_dispatcher(s: Stack) -> None:
    """Task ids are per owner (issue 28): the same `taskId` from two users is two tasks,
    each dispatched, followed and answered under its owner's id; neither sees the other."""
    ends = ("completed", "failed", "crashed", "timed_out", "cancelled")
    alices = await s.submit("alice", taskId="t1", agent="fake", prompt="alice's work")
    assert (await s.until("t1", *ends, user="alice"))["status"] == "completed"
    await room_freed(s)  # the node holds one task at a time
    bobs = await s.submit("bob", taskId="t1", agent="fake", prompt="bob's work")  # no 409
    assert (bobs["taskId"], bobs["owner"]) == ("t1", "bob")
    assert bobs["workspaceId"] != alices["workspaceId"]
    assert bobs["sessionId"] != alices["sessionId"]
    assert (await s.until("t1", *ends, user="bob"))["status"] == "completed"
    for user, text in (("alice", "alice's work"), ("bob", "bob's work")):
        got = await s.task("t1", user)
        assert (got["taskId"], got["owner"]) == ("t1", user)
        events = await s.events_until("t1", "prompt.finished", user=user)
        (started,) = [e for e in events if e["type"] == "prompt.started"]
        assert started["data"]["prompt"] == [{"type": "text", "text": text}]
    # Each one's asks reach their own task: bob's cancel is of his (ended: 409), not alice's.
    r = await s.client.post("/api/tasks/t1/cancel", headers=s.user("bob"))
    assert r.status_code == 409
    # A user's `?owner=` names nothing; an admin's names whose.
    r = await s.client.get("/api/tasks/t1", params={"owner": "alice"}, headers=s.user("bob"))
    assert r.json()["owner"] == "bob"
    r = await s.client.get("/api/tasks/t1", headers=s.user("carol"))
    assert r.status_code == 404
    admin = {"Authorization": f"Bearer {s.plane.tokens.mint_user_token('root', admin=True)}"}
    r = await s.client.get("/api/tasks/t1", params={"owner": "bob"}, headers=admin)
    assert (r.status_code, r.json()["sessionId"]) == (200, bobs["sessionId"])
    with s.plane.engine.connect() as conn:  # two rows, two keys, neither the user's id
        keys = conn.execute(
            select(tasks.c.task_id, tasks.c.owner).where(tasks.c.client_task_id == "t1")
        ).all()
    assert sorted(owner for _, owner in keys) == ["alice", "bob"]
    assert all(key.startswith("task-") for key, _ in keys) and keys[0][0] != keys[1][0]
