"""POST /api/tasks with a repository (issue 23): refused before anything is placed or a
node asked for (no App, a malformed name, no proven link of the user's to the installation
that holds it, another owner's task branch), with nothing stored; accepted, the grant and
the task's branch are recorded with its workspace. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from control_plane.github import links as github_links
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import (
    agent_sessions,
    node_requests,
    tasks,
    workspace_repositories,
    workspaces,
)
from tests.control_plane.harness import Running, running
from tests.github.conftest import ACME, Hub
from tests.github.test_git_token_api import link

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

STORED = (tasks, workspaces, workspace_repositories, agent_sessions, node_requests)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in STORED
        }


async def submit(cp: Running, user: str = "alice", **body: Any) -> tuple[int, str]:
    base = {"agent": "fake", "prompt": "fix it"}
    r = await cp.client.post("/api/tasks", json={**base, **body}, headers=cp.user(user))
    return r.status_code, r.json().get("error", "") if r.status_code >= 400 else r.text


REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    ("malformed", {"repository": "acme"}, 422, "not a GitHub repository"),
    ("a .git name", {"repository": "acme/widgets.git"}, 422, "not a GitHub repository name"),
    ("a path", {"repository": "../acme/widgets"}, 422, "not a GitHub repository"),
    ("not a string", {"repository": ["acme/widgets"]}, 422, "invalid body"),
    ("a base without a repository", {"baseBranch": "main"}, 422, "only for a task with"),
    ("a pull request without one", {"pullRequest": True}, 422, "only for a task with"),
    (
        "a base that is no branch",
        {"repository": "acme/widgets", "baseBranch": "../main"},
        422,
        "not a branch name",
    ),
    (
        "the base is the task's own branch",
        {"repository": "acme/widgets", "taskId": "t1", "baseBranch": "vm-agent/t1"},
        422,
        "task's own branch",
    ),
    (
        "another organisation's repository",
        {"repository": "globex/secret"},
        403,
        "has no link to GitHub installation 90001",
    ),
    ("the App is not there", {"repository": "acme/nowhere"}, 403, "not installed on acme/nowhere"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
async def test_refused_before_anything_is_placed(
    cp_settings: ControlPlaneSettings, hub: Hub, case: tuple[str, dict[str, Any], int, str]
) -> None:
    _name, body, status, reason = case
    async with running(cp_settings) as cp:  # no node is ready: a placed task asks for one
        link(cp, "alice")
        before = counts(cp.plane.engine)
        got, error = await submit(cp, **body)
        assert (got, reason in error) == (status, True), (got, error)
        assert counts(cp.plane.engine) == before == dict.fromkeys(before, 0)
    # GitHub is asked only for a well-formed name
    asked = [c for c in hub.state.calls if c.path.endswith("/installation")]
    assert bool(asked) == (status == 403)


async def test_no_link_another_user_s_link_or_an_unproven_one_is_403(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    async with running(cp_settings) as cp:
        got, error = await submit(cp, repository="acme/widgets")
        assert got == 403 and "user 'alice' has no link to GitHub installation 31337" in error
        link(cp, "bob")  # bob's link is no link of alice's
        got, error = await submit(cp, repository="acme/widgets")
        assert got == 403 and "has no link" in error
        github_links.link_installation(cp.plane.engine, "alice", str(ACME), "acme")
        got, error = await submit(cp, repository="acme/widgets")
        assert got == 403 and "is not proven" in error
        assert counts(cp.plane.engine) == dict.fromkeys(counts(cp.plane.engine), 0)


async def test_without_an_app_a_repository_is_422(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    no_app = cp_settings.model_copy(
        update={"github_app_id": None, "github_app_private_key_file": None}
    )
    async with running(no_app) as cp:
        link(cp, "alice")
        got, error = await submit(cp, repository="acme/widgets")
        assert got == 422 and "needs a GitHub App" in error
        assert counts(cp.plane.engine) == dict.fromkeys(counts(cp.plane.engine), 0)
        got, _ = await submit(cp)  # a task without one is as before
        assert got == 201
    assert hub.state.calls == []


async def test_github_down_is_503_and_nothing_stored(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    async with running(cp_settings) as cp:
        link(cp, "alice")
        path = "/repos/acme/widgets/installation"
        hub.state.fail_next("GET", path, 502, times=cp_settings.github_attempts)
        got, error = await submit(cp, repository="acme/widgets")
        assert got == 503 and "GitHub is unavailable" in error
        assert counts(cp.plane.engine) == dict.fromkeys(counts(cp.plane.engine), 0)


async def test_accepted_the_grant_and_branch_are_recorded_and_a_branch_is_one_task_s(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    async with running(cp_settings) as cp:
        await cp.ready("n1", cpus=16, mem_gb=64)
        link(cp, "alice")
        link(cp, "bob")
        got, text = await submit(
            cp, taskId="fix:1", repository="acme/widgets", baseBranch="main", pullRequest=True
        )
        assert got == 201, text
        with cp.plane.engine.connect() as conn:
            (row,) = conn.execute(select(workspace_repositories)).mappings()
        assert (row["repository"], row["installation_id"], row["link_storage_id"]) == (
            "acme/widgets",
            str(ACME),
            f"alice:{ACME}",
        )
        assert (row["branch"], row["base_branch"], row["pull_request_wanted"]) == (
            "vm-agent/fix-1",
            "main",
            True,
        )
        assert row["pushed"] is None and row["user_id"] == "alice"
        r = await cp.client.get("/api/tasks/fix:1", headers=cp.user("alice"))
        view = r.json()
        assert (view["repository"], view["branch"], view["baseBranch"], view["pushed"]) == (
            "acme/widgets",
            "vm-agent/fix-1",
            "main",
            None,
        )
        assert view["pullRequest"] is True and view["pullRequestUrl"] is None

        # bob's own `fix:1` would push over alice's branch: refused, nothing of it stored
        before = counts(cp.plane.engine)
        got, error = await submit(cp, "bob", taskId="fix:1", repository="acme/widgets")
        assert got == 409 and "belongs to another task" in error
        assert counts(cp.plane.engine) == before
        got, _ = await submit(cp, "bob", taskId="fix:1", repository="acme/gadgets")
        assert got == 201  # another repository: its own branch
