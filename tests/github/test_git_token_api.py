"""POST /api/nodes/{node}/workspaces/{ws}/git-token: a node's callback token gets a
short-lived installation token for its own workspace's repository only; the token opens
that repository in the stand-in's real git and nothing else. SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import delete

from control_plane.github import access
from control_plane.github import links as github_links
from control_plane.github.app import app_from_settings
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import github_installations
from tests.control_plane.harness import Running, running
from tests.github.conftest import ACME, Hub, git, remote

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def token_path(node: str, workspace: str) -> str:
    return f"/api/nodes/{node}/workspaces/{workspace}/git-token"


async def task_on(cp: Running, user: str, repo: str | None) -> tuple[str, str]:
    """A task of `user` placed on a node (as the task submission does it), with the
    grant for `repo` recorded beside its workspace; returns (node, workspace)."""
    grant = None
    if repo is not None:
        app = app_from_settings(cp.plane.settings, time.time)
        assert app is not None
        grant = await access.repository_access(cp.plane.engine, app, user, repo)
    r = await cp.client.post(
        "/api/tasks", json={"agent": "fake", "prompt": "hi"}, headers=cp.user(user)
    )
    assert r.status_code in (200, 201), r.text
    node, workspace = r.json()["nodeId"], r.json()["workspaceId"]
    if grant is not None:
        with cp.plane.engine.begin() as conn:
            access.record_workspace_repository(conn, workspace, grant, time.time())
    return node, workspace


def link(cp: Running, user: str) -> None:
    proof = github_links.Proof("github-user", f"{user}-gh", time.time())
    github_links.link_installation(cp.plane.engine, user, str(ACME), "acme", proof)


async def test_the_node_gets_a_token_for_its_workspace_s_repository_only(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    async with running(cp_settings) as cp:
        await cp.ready("n1")
        link(cp, "alice")
        node, ws = await task_on(cp, "alice", "acme/widgets")
        assert node == "n1"
        r = await cp.client.post(token_path(node, ws), headers=cp.callback(node))
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["repository"] == "acme/widgets"
        assert body["permissions"] == {"contents": "write", "pull_requests": "write"}
        assert 3500 < body["expiresAt"] - time.time() <= 3600
        token = body["token"]

    # GitHub saw the installation's external id in the path, never the storage key.
    (minted,) = [c for c in hub.state.calls if c.path.endswith("/access_tokens")]
    assert minted.path == f"/app/installations/{ACME}/access_tokens"
    assert all("alice:" not in c.path and "%3A" not in c.path for c in hub.state.calls)

    # The token: clone and push a task branch of acme/widgets; nothing else.
    work = tmp_path / "w"
    await git("clone", "-q", remote(hub.url, token, "acme/widgets"), str(work), cwd=tmp_path)
    (work / "fix.txt").write_text("fixed\n")
    await git("checkout", "-q", "-b", "task/1", cwd=work)
    await git("add", "fix.txt", cwd=work)
    await git("commit", "-q", "-m", "fix", cwd=work)
    await git("push", "-q", "origin", "task/1", cwd=work)
    repo = hub.state.repository("acme/widgets")
    head = (await git("rev-parse", "HEAD", cwd=work)).stdout.strip()
    assert hub.state.branches(repo)["task/1"] == head
    refused = await git("push", "origin", "HEAD:main", cwd=work, check=False)
    assert "GH006" in refused.stderr
    other = await git(
        "clone", "-q", remote(hub.url, token, "acme/gadgets"), "g", cwd=tmp_path, check=False
    )
    assert other.returncode != 0


async def test_two_users_of_one_organisation_each_get_tokens_for_their_own_tasks(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    async with running(cp_settings) as cp:
        await cp.ready("n1")
        await cp.ready("n2")
        placed = []
        for user in ("alice", "bob"):
            link(cp, user)
            placed.append(await task_on(cp, user, "acme/widgets"))
        for node, ws in placed:
            r = await cp.client.post(token_path(node, ws), headers=cp.callback(node))
            assert r.status_code == 200, r.text
        grants = [access.workspace_repository(cp.plane.engine, ws) for _, ws in placed]
        assert [g.link_storage_id for g in grants if g] == [f"alice:{ACME}", f"bob:{ACME}"]


async def test_refusals(cp_settings: ControlPlaneSettings, hub: Hub) -> None:
    async with running(cp_settings) as cp:
        await cp.ready("n1", cpus=16, mem_gb=64)
        link(cp, "alice")
        node, ws = await task_on(cp, "alice", "acme/widgets")
        _, bare = await task_on(cp, "alice", None)
        cases = [
            # another node's callback token on this node's path, on its own path
            (token_path(node, ws), cp.callback("n2"), 403, "token is for another node"),
            (token_path("n2", ws), cp.callback("n2"), 403, "workspace is on another node"),
            (token_path(node, "ws-unknown"), cp.callback(node), 404, "no such workspace"),
            (token_path(node, bare), cp.callback(node), 404, "has no repository"),
            (token_path(node, ws), cp.user("alice"), 403, "not a callback token"),
        ]
        for path, headers, status, reason in cases:
            r = await cp.client.post(path, headers=headers)
            assert (r.status_code, reason in r.json()["error"]) == (status, True), (path, r.text)
        r = await cp.client.post(token_path(node, ws))
        assert r.status_code == 401

        # The owner's link gone: no more tokens for the workspace.
        with cp.plane.engine.begin() as conn:
            conn.execute(delete(github_installations))
        r = await cp.client.post(token_path(node, ws), headers=cp.callback(node))
        assert r.status_code == 403 and "link" in r.json()["error"]

        # A released workspace: none either.
        link(cp, "alice")
        r = await cp.client.post(f"/api/workspaces/{ws}/release", headers=cp.user("alice"))
        assert r.status_code == 200
        r = await cp.client.post(token_path(node, ws), headers=cp.callback(node))
        assert r.status_code == 403 and "released" in r.json()["error"]
    assert not [c for c in hub.state.calls if c.path.endswith("/access_tokens")]


async def test_without_an_app_the_call_is_503(
    settings_no_app: ControlPlaneSettings, hub: Hub
) -> None:
    async with running(settings_no_app) as cp:
        await cp.ready("n1")
        link(cp, "alice")
        r = await cp.client.post(
            "/api/tasks", json={"agent": "fake", "prompt": "hi"}, headers=cp.user("alice")
        )
        node, ws = r.json()["nodeId"], r.json()["workspaceId"]
        grant = access.RepositoryGrant("acme/widgets", str(ACME), f"alice:{ACME}", "alice")
        with cp.plane.engine.begin() as conn:
            access.record_workspace_repository(conn, ws, grant, time.time())
        r = await cp.client.post(token_path(node, ws), headers=cp.callback(node))
        assert r.status_code == 503 and "no GitHub App is configured" in r.json()["error"]


@pytest.fixture
def settings_no_app(cp_settings: ControlPlaneSettings) -> ControlPlaneSettings:
    return cp_settings.model_copy(
        update={"github_app_id": None, "github_app_private_key_file": None}
    )
