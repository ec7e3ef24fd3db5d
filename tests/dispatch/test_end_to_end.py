"""A task submitted to the control plane runs on a real daemon (the fake agent) and is
followed to its outcome: completed, a permission answered through the control plane, a
follow-up, a cancel, an agent without credentials (auth_required); events read back."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.dispatch.harness import stack

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_task_runs_to_completed_and_its_events_read_back(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit(taskId="t1", agent="fake", prompt="hello there")
        done = await s.until("t1", "completed", "failed", "crashed", "timed_out")
        assert done["status"] == "completed", done
        assert done["outcome"]["kind"] == "completed"
        assert done["outcome"]["stopReason"] == "end_turn"
        # The outcome may come over the connection before the outbox brings the updates.
        done = await s.eventually("t1", lambda t: t["timings"]["firstUpdateAt"] is not None)
        timings = done["timings"]
        assert all(timings[k] for k in ("submittedAt", "nodeReadyAt", "endedAt"))
        assert [t["status"] for t in done["transitions"]] == [
            "queued", "waiting_for_node", "starting", "running", "completed",
        ]  # fmt: skip
        events = await s.events_until("t1", "prompt.finished")
        types = [e["type"] for e in events]
        assert "prompt.started" in types and "prompt.finished" in types
        started = next(e for e in events if e["type"] == "prompt.started")
        assert started["data"]["prompt"] == [{"type": "text", "text": "hello there"}]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs)


async def test_a_permission_request_is_answered_through_the_control_plane(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path) as s:
        await s.submit(taskId="t1", agent="fake-tools", prompt="write it")
        asked = await s.eventually("t1", lambda t: bool(t["pendingPermissions"]))
        (pending,) = asked["pendingPermissions"]
        assert asked["status"] == "running"
        options = {o["kind"]: o["optionId"] for o in pending["options"]}
        r = await s.client.post(
            f"/api/tasks/t1/permissions/{pending['requestId']}",
            json={"optionId": options["allow_once"]},
            headers=s.user(),
        )
        assert r.status_code == 200, r.text
        done = await s.until("t1", "completed", "failed", "crashed", "timed_out", "cancelled")
        assert done["status"] == "completed", done
        events = await s.events_until("t1", "permission.resolved")
        (resolved,) = [e for e in events if e["type"] == "permission.resolved"]
        assert resolved["data"]["outcome"] == {
            "outcome": "selected",
            "optionId": options["allow_once"],
        }


async def test_a_policy_answers_permissions_and_a_follow_up_reuses_the_session(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path) as s:
        await s.submit(
            taskId="t1", agent="fake-tools", prompt="one", permissionPolicy="reject", followUps=True
        )
        first = await s.until("t1", "awaiting_follow_up", "failed", "crashed", "completed")
        assert first["status"] == "awaiting_follow_up", first
        events = await s.events_until("t1", "permission.resolved")
        (resolved,) = [e for e in events if e["type"] == "permission.resolved"]
        assert resolved["data"]["outcome"]["optionId"].startswith("reject")
        r = await s.client.post("/api/tasks/t1/prompts", json={"prompt": "two"}, headers=s.user())
        assert r.status_code == 202, r.text
        prompt_id = r.json()["promptId"]
        await s.eventually(
            "t1",
            lambda t: t["status"] == "awaiting_follow_up" and t["outcome"]["promptId"] == prompt_id,
        )
        r = await s.client.post("/api/tasks/t1/close", headers=s.user())
        assert (r.status_code, r.json()["status"]) == (200, "completed")
        events = await s.events_until("t1", "prompt.finished")
        started = [e["data"]["prompt_id"] for e in events if e["type"] == "prompt.started"]
        assert started[-1] == prompt_id and len(started) == 2  # one session, two prompts
        r = await s.client.post("/api/tasks/t1/prompts", json={"prompt": "3"}, headers=s.user())
        assert r.status_code == 409


async def test_cancel_reaches_the_running_prompt(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit(taskId="t1", agent="fake-slow", prompt="take your time")
        await s.eventually("t1", lambda t: t["timings"]["firstUpdateAt"] is not None)
        r = await s.client.post("/api/tasks/t1/cancel", headers=s.user())
        assert r.status_code == 202, r.text
        done = await s.until("t1", "cancelled", "completed", "failed", "crashed")
        assert done["status"] == "cancelled", done
        assert done["outcome"]["kind"] == "cancelled"
        r = await s.client.post("/api/tasks/t1/cancel", headers=s.user())
        assert r.status_code == 409


async def test_an_agent_without_credentials_ends_auth_required(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit(taskId="t1", agent="fake-auth", prompt="hello")
        done = await s.until("t1", "auth_required", "failed", "completed", "crashed")
        assert done["status"] == "auth_required", done
        assert done["outcome"]["authMethods"], done["outcome"]
        assert done["reason"]


async def test_an_agent_that_crashes_unrecoverably_ends_the_task_crashed(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit(taskId="t1", agent="fake-crash", prompt="boom")
        done = await s.until("t1", "crashed", "failed", "completed", "timed_out")
        assert done["status"] == "crashed", done
        assert done["outcome"]["kind"] == "crashed"
        events = await s.events_until("t1", "agent.crash_report")
        (report,) = [e["data"] for e in events if e["type"] == "agent.crash_report"]
        assert report["recovered"] is False


async def test_an_ended_task_frees_its_room_on_the_node(tmp_path: Path) -> None:
    # The node holds one task at a time (the platform's default reservation is its size
    # here, or bigger than half of it): the next is placed there only once the first ended.
    async with stack(tmp_path) as s:
        for task_id in ("t1", "t2", "t3"):
            made = await s.submit(taskId=task_id, agent="fake", prompt="next")
            assert made["nodeId"] == "node-1", made["placementExplanation"]
            done = await s.until(task_id, "completed", "failed", "crashed")
            assert done["status"] == "completed"
            ws = f"/api/workspaces/{done['workspaceId']}"
            with anyio.fail_after(30):
                while (await s.client.get(ws, headers=s.user())).json()["state"] != "released":
                    await anyio.sleep(0.05)
