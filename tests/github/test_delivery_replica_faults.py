"""A dispatching replica SIGKILLed between the node's push and its record, or between
GitHub making the pull request and its record (the dispatcher's fault points `pushed` and
`pull_request_opened`); the next replica takes the task over: it pushes again (the node
answers the same) and finds the pull request GitHub made, so there is one. PostgreSQL,
control planes as processes, the GitHub stand-in and a fake node on loopback."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from control_plane.dispatch.addresses import record_address
from control_plane.github import links as github_links
from tests.control_plane.test_replicas import minter
from tests.dispatch.test_replica_faults import replica, wait_dead
from tests.github.conftest import ACME, APP_ID, Hub
from tests.github.fake_node import fake_node
from tests.postgres import fresh_schema, postgres_url

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

WAIT_S = 60.0


@pytest.mark.parametrize("point", ["pushed", "pull_request_opened"])
async def test_a_replica_killed_mid_delivery_leaves_one_push_and_one_pull_request(
    tmp_path: Path, hub: Hub, point: str
) -> None:
    key = tmp_path / "app-key.pem"
    key.touch(mode=0o600)
    key.write_bytes(hub.app_key_pem)
    github = {
        "github_app_id": APP_ID,
        "github_app_private_key_file": key,
        "github_api_url": hub.url,
        "github_git_url": hub.url,
        "github_max_wait_s": 0.01,
    }
    with (
        fresh_schema(postgres_url()) as db,
        minter(tmp_path, db) as plane,
        replica(tmp_path, "api", db, dispatch_enabled=False, **github) as api,
    ):
        async with fake_node("n1", tmp_path / "node") as node, api.client() as client:
            node.control_plane = api.url
            node.callback_token = plane.tokens.mint_callback_token("n1")
            callback = {"Authorization": f"Bearer {node.callback_token}"}
            capacity = {"cpus": 4, "mem_total_bytes": 8 * 2**30, "disk_total_bytes": 80 * 2**30}
            r = await client.post(
                "/api/nodes/n1/ready",
                json={"version": "0.1.0", "capacity": capacity},
                headers=callback,
            )
            assert r.status_code == 200, r.text
            record_address(plane.engine, "n1", node.url, "/srv/workspaces", time.time())
            proof = github_links.Proof("github-user", "alice-gh", time.time())
            github_links.link_installation(plane.engine, "alice", str(ACME), "acme", proof)
            user = {"Authorization": f"Bearer {plane.tokens.mint_user_token('alice')}"}
            body = {
                "taskId": "t1",
                "agent": "fake",
                "prompt": "once only",
                "repository": "acme/widgets",
                "pullRequest": True,
            }
            r = await client.post("/api/tasks", json=body, headers=user)
            assert r.status_code == 201, r.text

            with replica(tmp_path, "first", db, dispatch_kill_at=point, **github) as first:
                assert await wait_dead(first.proc) == -signal.SIGKILL
            assert f"killed at {point}" in (tmp_path / "first.log").read_text()
            with replica(tmp_path, "second", db, **github):
                task = await until_stopped(client, user, node)
    assert task["status"] == "completed", task
    # killed after the push: the node was asked again (the first answer was lost with its
    # replica) and answered the same; killed after the pull request: the push was recorded
    assert node.methods().count("workspace/push") == (2 if point == "pushed" else 1)
    assert len(node.pushes) == 1
    (pull,) = hub.state.pulls
    assert task["pullRequestUrl"] == pull["html_url"] and task["pushed"] is True
    assert task["headCommit"] == pull["head"]["sha"]
    made = [c for c in hub.state.calls if c.method == "POST" and c.path.endswith("/pulls")]
    assert [c.status for c in made] == [201]
    if point == "pull_request_opened":  # the second replica found the one GitHub made
        listed = [c for c in hub.state.calls if c.method == "GET" and c.path.endswith("/pulls")]
        assert [c.status for c in listed] == [200, 200]
    ends = [t["status"] for t in task["transitions"]]
    assert ends.count("completed") == 1 and ends.count("delivering") == 1


async def until_stopped(client: Any, user: dict[str, str], node: Any) -> dict[str, Any]:
    task: dict[str, Any] = {}
    with anyio.move_on_after(WAIT_S):
        while True:
            task = (await client.get("/api/tasks/t1", headers=user)).json()
            session = node.sessions.get(task.get("sessionId") or "")
            ended = task.get("timings", {}).get("endedAt") is not None
            if ended and session is not None and session["state"] == "stopped":
                return task
            await anyio.sleep(0.1)
    raise AssertionError(f"the task did not end and stop its session: {task}")
