"""The git-token call's `access` (docs/callback-api.md): `read` mints a token that can fetch
the workspace's repository and push nothing (the agent's git), `write` one that can push
(the node's own push); the stand-in holds what GitHub was asked for. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.settings import ControlPlaneSettings
from tests.control_plane.harness import running
from tests.github.conftest import Hub, git, remote
from tests.github.test_git_token_api import link, task_on, token_path

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_read_token_fetches_and_cannot_push_a_write_token_pushes(
    cp_settings: ControlPlaneSettings, hub: Hub, tmp_path: Path
) -> None:
    async with running(cp_settings) as cp:
        await cp.ready("n1")
        link(cp, "alice")
        node, ws = await task_on(cp, "alice", "acme/widgets")
        path, headers = token_path(node, ws), cp.callback(node)
        read = await cp.client.post(path, json={"access": "read"}, headers=headers)
        assert read.status_code == 200, read.text
        assert read.json()["permissions"] == {"contents": "read"}
        write = await cp.client.post(path, json={"access": "write"}, headers=headers)
        assert write.json()["permissions"] == {"contents": "write", "pull_requests": "write"}
        # no body is `write`, as before the field; and the same token while it lives
        plain = await cp.client.post(path, headers=headers)
        assert plain.json()["token"] == write.json()["token"]
        assert read.json()["token"] != write.json()["token"]

        bad = [
            ({"access": "admin"}, 422),
            ({"access": "read", "repository": "acme/gadgets"}, 422),
            (["read"], 422),
        ]
        for body, status in bad:
            r = await cp.client.post(path, json=body, headers=headers)
            assert r.status_code == status, (body, r.text)
        r = await cp.client.post(path, content=b"{", headers=headers)
        assert r.status_code == 400
        # the caller is checked before the body is read
        r = await cp.client.post(path, json={"access": "admin"}, headers=cp.callback("n2"))
        assert r.status_code == 403

    # What GitHub was asked for, as the stand-in issued it.
    issued = {t.token: t.permissions for t in hub.state.tokens.values()}
    assert issued[read.json()["token"]] == {"contents": "read"}
    assert issued[write.json()["token"]] == {"contents": "write", "pull_requests": "write"}
    assert len(issued) == 2

    # In the stand-in's real git: the read token clones and is refused a push.
    work = tmp_path / "w"
    url = remote(hub.url, read.json()["token"], "acme/widgets")
    await git("clone", "-q", url, str(work), cwd=tmp_path)
    await git("checkout", "-q", "-b", "vm-agent/t1", cwd=work)
    await git("commit", "-q", "--allow-empty", "-m", "work", cwd=work)
    refused = await git("push", "origin", "vm-agent/t1", cwd=work, check=False)
    assert refused.returncode != 0 and "error: 403" in refused.stderr, refused.stderr
    repo = hub.state.repository("acme/widgets")
    assert "vm-agent/t1" not in hub.state.branches(repo)
    writer = remote(hub.url, write.json()["token"], "acme/widgets")
    await git("push", "-q", writer, "vm-agent/t1", cwd=work)
    assert "vm-agent/t1" in hub.state.branches(repo)
