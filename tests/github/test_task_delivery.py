"""A task with a repository, from submission to its work coming back (issue 23), against
the GitHub stand-in and a fake node on loopback that speaks the viewer protocol (the
daemon's half lands apart): `session/start` carries the repository, the node's push of the
task branch is recorded, the pull request is opened once, a refused push fails the task,
a cancelled one pushes nothing. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import select

from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import task_transitions, tasks
from tests.daemon.harness import base_env, vm_agent
from tests.github.conftest import APP_ID, Hub
from tests.github.delivery_harness import delivering, with_git
from tests.github.fake_node import RpcError
from vm_agent.cli.task import repository_lines

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def done(t: dict[str, Any]) -> bool:
    return t["timings"]["endedAt"] is not None


async def test_the_work_comes_back_as_the_task_branch_and_one_pull_request(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    settings = with_git(cp_settings, hub.url)
    async with delivering(settings, tmp_path) as d:
        r = await d.submit(
            taskId="t1",
            agent="fake",
            prompt="Fix the widgets\nand say so",
            repository="acme/widgets",
            pullRequest=True,
        )
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["repository"], made["branch"], made["baseBranch"]) == (
            "acme/widgets",
            "vm-agent/t1",
            None,
        )
        assert made["pullRequest"] is True
        task = await d.ended("t1")
        assert task["status"] == "completed", task
        (start,) = [p for m, p in d.node.calls if m == "session/start"]
        assert start["repository"] == {
            "workspace_id": task["workspaceId"],
            "url": f"{hub.url}/acme/widgets.git",
            "base_branch": None,
            "task_branch": "vm-agent/t1",
            "author": {
                "name": "vm-agent[bot]",
                "email": f"{APP_ID}+vm-agent[bot]@users.noreply.github.com",
            },
        }
        # pushed before the session was stopped, once
        methods = d.node.methods()
        assert methods.count("workspace/push") == 1
        assert methods.index("workspace/push") < methods.index("session/stop")

        repo = hub.state.repository("acme/widgets")
        head = hub.state.branches(repo)["vm-agent/t1"]
        (pull,) = hub.state.pulls
        assert (pull["head"]["ref"], pull["base"]["ref"], pull["head"]["sha"]) == (
            "vm-agent/t1",
            "main",
            head,
        )
        assert pull["title"] == "Fix the widgets"
        assert {k: task[k] for k in ("repository", "branch", "baseBranch", "headCommit")} == {
            "repository": "acme/widgets",
            "branch": "vm-agent/t1",
            "baseBranch": "main",
            "headCommit": head,
        }
        assert task["pushed"] is True and task["pullRequestUrl"] == pull["html_url"]
        assert task["outcome"]["kind"] == "completed"  # the turn's outcome is kept
        statuses = [t["status"] for t in task["transitions"]]
        assert statuses[-2:] == ["delivering", "completed"]
        # the commit is the task's author's, on top of the default branch
        assert hub.state.branches(repo)["main"] != head
    # the pull request went through the App's installation token, found before made
    pulls = [c for c in hub.state.calls if c.path == "/repos/acme/widgets/pulls"]
    assert [(c.method, c.status, c.auth) for c in pulls] == [
        ("GET", 200, "installation"),
        ("POST", 201, "installation"),
    ]


async def test_a_refused_push_fails_the_task_with_the_reason(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    async def refuse(_session: dict[str, Any]) -> dict[str, Any]:
        raise RpcError(-32603, "push rejected: protected branch hook declined")

    async with delivering(with_git(cp_settings, hub.url), tmp_path) as d:
        d.node.push = refuse
        r = await d.submit(
            taskId="t1", agent="fake", prompt="x", repository="acme/widgets", pullRequest=True
        )
        assert r.status_code == 201, r.text
        task = await d.ended("t1")
        assert task["status"] == "failed", task
        assert task["outcome"] == {
            "kind": "push_failed",
            "reason": "the push failed: push rejected: protected branch hook declined",
        }
        assert task["pushed"] is None and task["pullRequestUrl"] is None
        assert d.node.methods().count("workspace/push") == 1
        assert "session/stop" in d.node.methods()
    assert hub.state.pulls == []


async def test_nothing_to_push_completes_without_a_pull_request(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    async def nothing(session: dict[str, Any]) -> dict[str, Any]:
        repo = session["repository"]
        return {
            "branch": repo["task_branch"],
            "base_branch": "main",
            "head_commit": "0" * 40,
            "pushed": False,
            "reason": "no commits on the task branch",
        }

    async with delivering(with_git(cp_settings, hub.url), tmp_path) as d:
        d.node.push = nothing
        r = await d.submit(
            taskId="t1", agent="fake", prompt="x", repository="acme/widgets", pullRequest=True
        )
        assert r.status_code == 201, r.text
        task = await d.ended("t1")
        assert task["status"] == "completed", task
        assert (task["pushed"], task["pushReason"]) == (False, "no commits on the task branch")
        assert task["pullRequestUrl"] is None
    assert hub.state.pulls == []


async def test_a_node_that_pushes_another_branch_fails_the_task(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    async def sneaky(_session: dict[str, Any]) -> dict[str, Any]:
        return {"branch": "main", "base_branch": "main", "head_commit": "a" * 40, "pushed": True}

    async with delivering(with_git(cp_settings, hub.url), tmp_path) as d:
        d.node.push = sneaky
        r = await d.submit(
            taskId="t1", agent="fake", prompt="x", repository="acme/widgets", pullRequest=True
        )
        assert r.status_code == 201, r.text
        task = await d.ended("t1")
        assert task["status"] == "failed" and "not the task's branch" in task["reason"]
    assert hub.state.pulls == []


async def test_closed_by_the_user_the_work_comes_back_cancelled_it_does_not(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    async with delivering(with_git(cp_settings, hub.url), tmp_path) as d:
        for task_id in ("kept", "dropped"):
            r = await d.submit(
                taskId=task_id,
                agent="fake",
                prompt="x",
                repository="acme/widgets",
                followUps=True,
            )
            assert r.status_code == 201, r.text
            await d.until(task_id, lambda t: t["status"] == "awaiting_follow_up")
        assert "workspace/push" not in d.node.methods()  # not while follow-ups may come
        headers = d.cp.user("alice")
        r = await d.cp.client.post("/api/tasks/kept/close", headers=headers)
        assert r.status_code == 200, r.text
        r = await d.cp.client.post("/api/tasks/dropped/cancel", headers=headers)
        assert r.status_code == 202, r.text
        kept, dropped = await d.ended("kept"), await d.ended("dropped")
        assert (kept["status"], kept["pushed"], kept["outcome"]["kind"]) == (
            "completed",
            True,
            "closed",
        )
        assert kept["pullRequestUrl"] is None  # not asked for
        assert dropped["status"] == "cancelled" and dropped["pushed"] is None
        pushed = [p["session_id"] for m, p in d.node.calls if m == "workspace/push"]
        assert pushed == [kept["sessionId"]]
        with d.cp.plane.engine.connect() as conn:
            causes = conn.execute(
                select(task_transitions.c.status)
                .join(tasks, tasks.c.task_id == task_transitions.c.task_id)
                .where(tasks.c.client_task_id == "dropped")
            ).scalars()
            assert "delivering" not in list(causes)
    repo = hub.state.repository("acme/widgets")
    assert set(hub.state.branches(repo)) == {"main", "vm-agent/kept"}


async def test_the_task_command_submits_a_repository_and_shows_what_came_back(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    async with delivering(with_git(cp_settings, hub.url), tmp_path) as d:
        token = d.cp.plane.tokens.mint_user_token("alice")
        cli = ("task", "--url", d.cp.url, "--token", token)
        run = vm_agent(
            *cli, "run", "--agent", "fake", "--task-id", "cli1", "--detach",
            "--repository", "acme/widgets", "--base-branch", "main", "--pull-request", "fix it",
        )  # fmt: skip
        done = await anyio.run_process(run, env=base_env(), check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        task = await d.ended("cli1")
        assert task["status"] == "completed" and task["baseBranch"] == "main"
        show = await anyio.run_process(vm_agent(*cli, "show", "cli1"), env=base_env())
        said = show.stderr.decode()
        assert f"pushed, head commit {task['headCommit']}" in said
        assert f"pull request: {task['pullRequestUrl']}" in said
        assert "acme/widgets: branch vm-agent/cli1 (from main)" in said
        assert json.loads(show.stdout)["pullRequestUrl"] == task["pullRequestUrl"]
        usage = vm_agent(*cli, "run", "--agent", "fake", "--pull-request", "x")
        refused = await anyio.run_process(usage, env=base_env(), check=False)
        assert refused.returncode == 2 and b"need --repository" in refused.stderr


def test_repository_lines() -> None:
    assert repository_lines({"repository": None}) == []
    view = {
        "repository": "acme/widgets",
        "branch": "vm-agent/t1",
        "baseBranch": None,
        "pushed": False,
        "pushReason": "no commits on the task branch",
        "pullRequestUrl": None,
    }
    assert repository_lines(view) == [
        "   acme/widgets: branch vm-agent/t1",
        "   nothing pushed: no commits on the task branch",
    ]
