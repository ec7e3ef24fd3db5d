"""POST /api/nodes/{node}/workspaces/{ws}/pull-request: the task's pushed branch becomes a
pull request into the default branch, opened once and recorded with the workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.github import access
from control_plane.settings import ControlPlaneSettings
from tests.control_plane.harness import running
from tests.github.conftest import Hub, git, remote
from tests.github.test_git_token_api import link, task_on, token_path

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def pr_path(node: str, workspace: str) -> str:
    return f"/api/nodes/{node}/workspaces/{workspace}/pull-request"


async def test_the_task_branch_becomes_one_pull_request(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    async with running(cp_settings) as cp:
        await cp.ready("n1")
        link(cp, "alice")
        node, ws = await task_on(cp, "alice", "acme/widgets")
        r = await cp.client.post(token_path(node, ws), headers=cp.callback(node))
        token = r.json()["token"]
        work = tmp_path / "w"
        await git("clone", "-q", remote(hub.url, token, "acme/widgets"), str(work), cwd=tmp_path)
        await git("checkout", "-q", "-b", "task/1", cwd=work)
        (work / "fix.txt").write_text("fixed\n")
        await git("add", "fix.txt", cwd=work)
        await git("commit", "-q", "-m", "fix", cwd=work)
        await git("push", "-q", "origin", "task/1", cwd=work)
        head = (await git("rev-parse", "HEAD", cwd=work)).stdout.strip()

        refusals = [
            ({"head": "main", "title": "x"}, "default branch (main)"),
            ({"head": "../main", "title": "x"}, "not a branch name"),
            ({"head": "task/never-pushed", "title": "x"}, "GitHub refused the pull request"),
            ({"head": "task/1"}, "invalid body"),
            ({"head": "task/1", "title": "x", "base": "dev"}, "invalid body"),
        ]
        for body, reason in refusals:
            r = await cp.client.post(pr_path(node, ws), json=body, headers=cp.callback(node))
            assert r.status_code == 422 and reason in r.json()["error"], (body, r.text)
        assert hub.state.pulls == []

        body = {"head": "task/1", "title": "Fix the widgets", "body": "by the agent"}
        r = await cp.client.post(pr_path(node, ws), json=body, headers=cp.callback("n2"))
        assert r.status_code == 403
        r = await cp.client.post(pr_path(node, ws), json=body, headers=cp.callback(node))
        assert r.status_code == 201, r.text
        made = r.json()
        assert made == {
            "number": 1,
            "url": f"{hub.url}/acme/widgets/pull/1",
            "head": "task/1",
            "headCommit": head,
            "base": "main",
        }
        again = await cp.client.post(pr_path(node, ws), json=body, headers=cp.callback(node))
        assert (again.status_code, again.json()) == (200, made)
        assert len(hub.state.pulls) == 1
        assert hub.state.pulls[0]["title"] == "Fix the widgets"
        recorded = access.pull_request_of(cp.plane.engine, ws)
        assert recorded is not None and recorded.url == made["url"]
    # The pull request was opened with the workspace's installation token.
    (opened,) = [
        c for c in hub.state.calls if c.path == "/repos/acme/widgets/pulls" and c.status == 201
    ]
    assert opened.auth == "installation"


async def test_no_body_is_read_before_the_token_is(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    async with running(cp_settings) as cp:
        r = await cp.client.post(pr_path("n1", "ws"), content=b"{not json")
        assert r.status_code == 401
        r = await cp.client.post(pr_path("n1", "ws"), content=b"{", headers=cp.callback("n1"))
        assert r.status_code == 404


async def test_a_retry_after_a_lost_answer_records_the_pull_request_github_made(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    async with running(cp_settings) as cp:
        await cp.ready("n1")
        link(cp, "alice")
        node, ws = await task_on(cp, "alice", "acme/widgets")
        token = (await cp.client.post(token_path(node, ws), headers=cp.callback(node))).json()
        work = tmp_path / "w"
        url = remote(hub.url, token["token"], "acme/widgets")
        await git("clone", "-q", url, str(work), cwd=tmp_path)
        await git("checkout", "-q", "-b", "task/2", cwd=work)
        await git("commit", "-q", "--allow-empty", "-m", "empty", cwd=work)
        await git("push", "-q", "origin", "task/2", cwd=work)
        # GitHub made the pull request, but its answer never reached the control plane.
        repo = hub.state.repository("acme/widgets")
        made = hub.state.open_pull(repo, {"head": "task/2", "base": "main", "title": "Fix"})
        body = {"head": "task/2", "title": "Fix"}
        r = await cp.client.post(pr_path(node, ws), json=body, headers=cp.callback(node))
        assert r.status_code == 201, r.text
        assert r.json()["url"] == made["html_url"]
        assert len(hub.state.pulls) == 1
        recorded = access.pull_request_of(cp.plane.engine, ws)
        assert recorded is not None and recorded.number == made["number"]
