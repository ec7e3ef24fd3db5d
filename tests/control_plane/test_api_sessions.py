"""Agent sessions and credentials: the control plane hands a node an agent's credentials
only for a session it made on that node, and only that session's agent's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from control_plane.settings import ControlPlaneSettings
from tests.control_plane.harness import Running, running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SECRETS = {
    "claude": {"ANTHROPIC_API_KEY": "sk-ant-claude-secret"},
    "codex": {"OPENAI_API_KEY": "sk-openai-codex-secret"},
}


@pytest.fixture
def with_secrets(settings: ControlPlaneSettings, tmp_path: Path) -> ControlPlaneSettings:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(SECRETS))
    path.chmod(0o600)  # the control plane refuses a file others may read
    return settings.model_copy(update={"secrets_file": path})


async def credentials(cp: Running, node: str, session: str, agent: str) -> tuple[int, Any]:
    r = await cp.client.post(
        f"/api/nodes/{node}/sessions/{session}/agent-credentials",
        json={"agent": agent},
        headers=cp.callback(node),
    )
    for env in SECRETS.values():
        for value in env.values():
            if r.status_code != 200:
                assert value not in r.text  # a refusal hands out nothing
    return r.status_code, r.json()


async def test_credentials_for_a_session_made_by_an_explicit_call(
    with_secrets: ControlPlaneSettings,
) -> None:
    async with running(with_secrets) as cp:
        await cp.ready("n1")
        r = await cp.client.post(
            "/api/nodes/n1/sessions", json={"agent": "claude"}, headers=cp.admin()
        )
        assert r.status_code == 201, r.text
        made = r.json()
        sid = made["sessionId"]
        assert (made["nodeId"], made["agent"], made["owner"]) == ("n1", "claude", "admin")
        status, body = await credentials(cp, "n1", sid, "claude")
        # Only claude's, and whose session it is (the node checks it before use).
        assert (status, body) == (200, {"env": SECRETS["claude"], "owner": "admin"})
        r = await cp.client.post(
            f"/api/nodes/n1/sessions/{sid}/agent-credentials",
            json={"agent": "claude"},
            headers=cp.callback("n1"),
        )
        assert r.headers["cache-control"] == "no-store"


async def test_each_refusal_hands_out_nothing(with_secrets: ControlPlaneSettings) -> None:
    async with running(with_secrets) as cp:
        sid = cp.make_session("n1", "claude")
        # A made-up session id.
        status, body = await credentials(cp, "n1", "s-made-up", "claude")
        assert status == 404
        assert body["error"] == "no such session: the control plane made no session 's-made-up'"
        # The session of another node, asked for by that other node with its own token.
        status, body = await credentials(cp, "n2", sid, "claude")
        assert (status, body["error"]) == (
            403,
            f"forbidden: session {sid!r} runs on another node",
        )
        # Another agent's name for the session.
        status, body = await credentials(cp, "n1", sid, "codex")
        assert (status, body["error"]) == (
            403,
            f"forbidden: session {sid!r} runs agent 'claude', not 'codex'",
        )
        # Another node's token on this node's path: refused before anything is looked up.
        r = await cp.client.post(
            f"/api/nodes/n1/sessions/{sid}/agent-credentials",
            json={"agent": "claude"},
            headers=cp.callback("n2"),
        )
        assert r.status_code == 403 and "sk-" not in r.text
        # And the right question still works.
        assert await credentials(cp, "n1", sid, "claude") == (
            200,
            {"env": SECRETS["claude"], "owner": "admin"},
        )


async def test_a_placed_task_makes_its_session_and_a_release_ends_it(
    with_secrets: ControlPlaneSettings,
) -> None:
    async with running(with_secrets) as cp:
        await cp.ready("n1")
        r = await cp.client.post(
            "/api/tasks", json={"agent": "codex", "prompt": "hi"}, headers=cp.user("alice")
        )
        task = r.json()
        assert task["nodeId"] == "n1"
        sid = task["sessionId"]
        assert await credentials(cp, "n1", sid, "codex") == (
            200,
            {"env": SECRETS["codex"], "owner": "alice"},
        )
        assert (await credentials(cp, "n1", sid, "claude"))[0] == 403
        r = await cp.client.get(f"/api/nodes/n1/sessions/{sid}", headers=cp.user("alice"))
        assert (r.json()["workspaceId"], r.json()["owner"]) == (task["workspaceId"], "alice")
        await cp.client.post(
            f"/api/workspaces/{task['workspaceId']}/release", headers=cp.user("alice")
        )
        status, body = await credentials(cp, "n1", sid, "codex")
        assert (status, body["error"]) == (403, f"forbidden: session {sid!r} has ended")


async def test_who_may_make_a_session(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        await cp.ready("n2")
        r = await cp.client.post(
            "/api/tasks", json={"agent": "claude", "prompt": "hi"}, headers=cp.user("alice")
        )
        ws = r.json()["workspaceId"]
        node = r.json()["nodeId"]
        other_node = "n2" if node == "n1" else "n1"

        async def make(path_node: str, body: dict[str, Any], user: str) -> tuple[int, Any]:
            headers = cp.admin() if user == "admin" else cp.user(user)
            r = await cp.client.post(f"/api/nodes/{path_node}/sessions", json=body, headers=headers)
            return r.status_code, r.json()

        status, made = await make(node, {"agent": "claude", "workspaceId": ws}, "alice")
        assert status == 201
        assert (made["owner"], made["workspaceId"], made["createdBy"]) == ("alice", ws, "alice")
        cases: list[tuple[str, dict[str, Any], str, int, str]] = [
            (node, {"agent": "claude"}, "alice", 422, "workspaceId is required"),
            # Another user's workspace answers as one that does not exist.
            (node, {"agent": "claude", "workspaceId": ws}, "bob", 404, f"no such workspace {ws!r}"),
            (
                node,
                {"agent": "claude", "workspaceId": "ws-nope"},
                "alice",
                404,
                "no such workspace",
            ),
            (other_node, {"agent": "claude", "workspaceId": ws}, "alice", 422, "runs on node"),
            (node, {"agent": "claude", "workspaceId": ws, "owner": "x"}, "alice", 403, "admin"),
            ("ghost", {"agent": "claude"}, "admin", 404, "no such node 'ghost'"),
            (node, {"agent": "bad agent"}, "admin", 422, "agent"),
        ]
        for path_node, body, user, want, phrase in cases:
            status, got = await make(path_node, body, user)
            assert status == want, (path_node, body, user, got)
            assert phrase in got["error"], (body, got)
        status, made = await make(other_node, {"agent": "codex", "owner": "carol"}, "admin")
        assert (status, made["owner"], made["workspaceId"]) == (201, "carol", None)
        # An admin may make one in a user's workspace: the workspace's owner owns it.
        status, made = await make(node, {"agent": "codex", "workspaceId": ws}, "admin")
        assert (status, made["owner"], made["createdBy"]) == (201, "alice", "admin")
        # Reading: the owner and admins; others get 404.
        path = f"/api/nodes/{node}/sessions/{made['sessionId']}"
        assert (await cp.client.get(path, headers=cp.user("alice"))).status_code == 200
        assert (await cp.client.get(path, headers=cp.user("bob"))).status_code == 404
        wrong = f"/api/nodes/{other_node}/sessions/{made['sessionId']}"
        assert (await cp.client.get(wrong, headers=cp.admin())).status_code == 404
        # A released workspace takes no new sessions.
        await cp.client.post(f"/api/workspaces/{ws}/release", headers=cp.user("alice"))
        status, got = await make(node, {"agent": "claude", "workspaceId": ws}, "alice")
        assert (status, got["error"]) == (409, f"workspace {ws!r} was released")


async def details(cp: Running, node: str, session: str, token_node: str | None = None) -> Any:
    return await cp.client.post(
        f"/api/nodes/{node}/sessions/{session}/details",
        json={},
        headers=cp.callback(token_node or node),
    )


async def test_session_details_say_whose_session_it_is_and_its_reservation(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        r = await cp.client.post(
            "/api/tasks",
            json={"agent": "codex", "prompt": "hi"},
            headers=cp.user("alice"),
        )
        assert r.status_code == 201, r.text
        task = r.json()
        sid = task["sessionId"]
        r = await details(cp, "n1", sid)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store", r.text
        got = r.json()
        assert (got["sessionId"], got["agent"], got["owner"], got["endedAt"]) == (
            sid,
            "codex",
            "alice",
            None,
        )
        # The workspace's resolved reservation: what the node is to enforce.
        assert got["reservation"] == task["reservation"]
        assert got["reservation"]["memoryMb"] > 0 and got["reservation"]["cpuMillis"] > 0
        # A made-up id, and another node's question about this node's session: 404 alike
        # (a node learns nothing of another node's sessions).
        assert (await details(cp, "n1", "s-made-up")).status_code == 404
        assert (await details(cp, "n2", sid)).status_code == 404
        # Another node's token on this node's path: refused before any lookup.
        assert (await details(cp, "n1", sid, token_node="n2")).status_code == 403
        # A session without a workspace has no reservation on record.
        bare = cp.make_session("n1", "claude")
        assert (await details(cp, "n1", bare)).json()["reservation"] is None
        await cp.client.post(
            f"/api/workspaces/{task['workspaceId']}/release", headers=cp.user("alice")
        )
        assert (await details(cp, "n1", sid)).json()["endedAt"] is not None
