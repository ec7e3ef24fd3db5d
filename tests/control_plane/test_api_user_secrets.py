"""A user's secrets over HTTP (issue 25): sealed at rest, listed without values, each
user's own; agent settings name them instead of a value, checked at submission and when a
layer is stored; the node gets the values through its callback, for a session of that
user's task that names them only (straight from the database where it matters)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import (
    agent_sessions,
    layer_defaults,
    node_requests,
    tasks,
    user_secrets,
    workspaces,
)
from tests.control_plane.harness import Running, running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

VALUE = "ghp_the-secret-value-42"


def server(secret: str = "gh", name: str = "github") -> dict[str, Any]:
    return {
        "name": name,
        "command": "github-mcp",
        "env": [
            {"name": "GITHUB_PERSONAL_ACCESS_TOKEN", "secret": secret},
            {"name": "GITHUB_HOST", "value": "github.com"},
        ],
    }


def counts(cp: Running) -> list[int]:
    with cp.plane.engine.connect() as conn:
        return [
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (
                tasks,
                workspaces,
                agent_sessions,
                node_requests,
                layer_defaults,
                user_secrets,
            )
        ]


async def put_secret(cp: Running, user: str, name: str, value: str = VALUE) -> int:
    r = await cp.client.put(f"/api/secrets/{name}", json={"value": value}, headers=cp.user(user))
    return r.status_code


async def submit(cp: Running, user: str, settings: dict[str, Any], **body: Any) -> Any:
    task = {"agent": "fake", "prompt": "hi", "agentSettings": settings, **body}
    return await cp.client.post("/api/tasks", json=task, headers=cp.user(user))


async def test_secrets_are_sealed_listed_without_values_and_each_users_own(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        assert await put_secret(cp, "alice", "gh") == 201
        assert await put_secret(cp, "alice", "gh", VALUE + "-new") == 200
        assert await put_secret(cp, "bob", "gh", "bobs-own-value") == 201
        with cp.plane.engine.connect() as conn:
            rows = conn.execute(select(user_secrets)).mappings().all()
        assert len(rows) == 2
        for row in rows:  # sealed: no row holds its value, in any column
            assert VALUE not in repr(dict(row)) and "bobs-own-value" not in repr(dict(row))
        r = await cp.client.get("/api/secrets", headers=cp.user("alice"))
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        [only] = r.json()["secrets"]
        assert set(only) == {"name", "createdAt", "updatedAt"} and only["name"] == "gh"
        assert VALUE not in r.text
        # bob's delete removes his, never alice's; a second one finds nothing.
        r = await cp.client.delete("/api/secrets/gh", headers=cp.user("bob"))
        assert r.status_code == 204
        r = await cp.client.delete("/api/secrets/gh", headers=cp.user("bob"))
        assert r.status_code == 404
        r = await cp.client.get("/api/secrets", headers=cp.user("alice"))
        assert [s["name"] for s in r.json()["secrets"]] == ["gh"]
        assert (await cp.client.get("/api/secrets")).status_code == 401


BAD_PUTS: list[tuple[str, Any, int]] = [
    ("a" * 65, {"value": "x"}, 422),
    ("a%20b", {"value": "x"}, 422),
    ("ok", {"value": "x" * 8193}, 422),
    ("ok", {"value": "é" * 4097}, 422),  # 8194 bytes in UTF-8
    ("ok", {"value": ""}, 422),
    ("ok", {"value": 5}, 422),
    ("ok", {"value": "x", "other": 1}, 422),
    ("ok", [], 422),
]


@pytest.mark.parametrize(("name", "body", "status"), BAD_PUTS)
async def test_bad_puts_are_refused_and_store_nothing(
    settings: ControlPlaneSettings, name: str, body: Any, status: int
) -> None:
    async with running(settings) as cp:
        r = await cp.client.put(f"/api/secrets/{name}", json=body, headers=cp.user("alice"))
        assert r.status_code == status, r.text
        assert counts(cp)[-1] == 0


async def test_a_task_stores_the_reference_and_never_shows_the_value(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        assert await put_secret(cp, "alice", "gh") == 201
        r = await submit(cp, "alice", {"mcpServers": [server()]}, taskId="t1")
        assert r.status_code == 201, r.text
        [shown] = r.json()["agentSettings"]["mcpServers"]
        assert shown["secrets"] == {"GITHUB_PERSONAL_ACCESS_TOKEN": "gh"}
        with cp.plane.engine.connect() as conn:
            values = conn.execute(select(tasks.c.agent_settings_json)).scalar_one()
        assert json.loads(values)["mcpServers"] == [{**server(), "args": []}]
        got = await cp.client.get("/api/tasks/t1", headers=cp.user("alice"))
        assert VALUE not in r.text + got.text + values


REFUSED: list[tuple[dict[str, Any], str, str]] = [
    # the task's agentSettings, field, a phrase of the message
    (
        {"mcpServers": [server("bobs")]},
        "mcpServers.github.env.GITHUB_PERSONAL_ACCESS_TOKEN",
        "no secret 'bobs'",
    ),
    (
        {"mcpServers": [server("nope")]},
        "mcpServers.github.env.GITHUB_PERSONAL_ACCESS_TOKEN",
        "no secret",
    ),
    (
        {
            "mcpServers": [
                {"name": "s", "command": "x", "env": [{"name": "A", "value": "v", "secret": "gh"}]}
            ]
        },
        "mcpServers.0.env.0",
        "exactly one of value and secret",
    ),
    (
        {"mcpServers": [{"name": "s", "command": "x", "env": [{"name": "A"}]}]},
        "mcpServers.0.env.0",
        "exactly one of value and secret",
    ),
    (
        {"mcpServers": [{"name": "s", "command": "x", "env": [{"name": "A", "secret": "a b"}]}]},
        "mcpServers.0.env.0.secret",
        "pattern",
    ),
]


@pytest.mark.parametrize(("agent_settings", "field", "phrase"), REFUSED)
async def test_a_reference_to_a_secret_the_owner_lacks_is_refused(
    settings: ControlPlaneSettings, agent_settings: dict[str, Any], field: str, phrase: str
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        assert await put_secret(cp, "bob", "bobs") == 201  # bob's: never alice's to name
        before = counts(cp)
        r = await submit(cp, "alice", agent_settings)
        assert r.status_code == 422, r.text
        body = r.json()
        assert (body["layer"], body["field"]) == ("task", field)
        assert phrase in body["error"]
        assert counts(cp) == before


async def test_a_layer_names_its_owners_secrets_only(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        assert await put_secret(cp, "alice", "gh") == 201
        before = counts(cp)
        for path, user in (("projects/p", "bob"), ("platform/platform", "admin")):
            headers = cp.admin() if user == "admin" else cp.user(user)
            body: dict[str, Any] = {"agentSettings": {"mcpServers": [server()]}}
            if user == "admin":  # the platform's layer defines every requirement
                body["requirements"] = PLATFORM
            r = await cp.client.put(f"/api/defaults/{path}", json=body, headers=headers)
            assert r.status_code == 422, r.text
            assert r.json().get("field") == "mcpServers.github.env.GITHUB_PERSONAL_ACCESS_TOKEN", (
                r.text
            )
        assert counts(cp) == before
        body = {"agentSettings": {"mcpServers": [server()]}}
        r = await cp.client.put("/api/defaults/projects/p", json=body, headers=cp.user("alice"))
        assert r.status_code == 201, r.text
        assert VALUE not in r.text
        # A task of alice's over her project: the reference reaches the task.
        r = await submit(cp, "alice", {}, projectId="p")
        assert r.status_code == 201, r.text
        assert r.json()["agentSettings"]["mcpServers"][0]["layer"] == "project"


PLATFORM = {
    "minVcpu": 1,
    "minMemoryGb": 1,
    "minDiskGb": 1,
    "exclusiveNode": False,
    "maxCoTenants": 4,
}


async def callback(cp: Running, node: str, session: str, token_node: str | None = None) -> Any:
    return await cp.client.post(
        f"/api/nodes/{node}/sessions/{session}/mcp-secrets",
        json={},
        headers=cp.callback(token_node or node),
    )


async def test_the_node_gets_the_values_for_its_sessions_task_only(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        assert await put_secret(cp, "alice", "gh") == 201
        assert await put_secret(cp, "alice", "unused", "not-for-this-task") == 201
        r = await submit(cp, "alice", {"mcpServers": [server()]}, taskId="t1")
        assert r.status_code == 201, r.text
        task = r.json()
        node, sid = task["nodeId"], task["sessionId"]
        r = await callback(cp, node, sid)
        assert r.status_code == 200, r.text
        assert r.json() == {"values": {"gh": VALUE}, "owner": "alice"}  # not "unused"
        assert r.headers["cache-control"] == "no-store"
        # Another node's token, another node's path, an unknown session: refused.
        assert (await callback(cp, node, sid, token_node="n2")).status_code in {401, 403}
        assert (await callback(cp, "n2", sid)).status_code == 403
        assert (await callback(cp, node, "s-unknown")).status_code == 404
        # A session made without a task names nothing: no values.
        other = cp.make_session(node, "fake")
        assert (await callback(cp, node, other)).json() == {"values": {}, "owner": "admin"}
        # A secret deleted since: 404 naming it, no value.
        assert (
            await cp.client.delete("/api/secrets/gh", headers=cp.user("alice"))
        ).status_code == 204
        r = await callback(cp, node, sid)
        assert r.status_code == 404 and "'gh'" in r.text
        # An ended session: refused.
        assert await put_secret(cp, "alice", "gh") == 201
        r = await cp.client.post(
            f"/api/workspaces/{task['workspaceId']}/release", headers=cp.user("alice")
        )
        assert r.status_code == 200, r.text
        r = await callback(cp, node, sid)
        assert r.status_code == 403 and "ended" in r.text
