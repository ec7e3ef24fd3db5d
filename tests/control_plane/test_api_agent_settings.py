"""Agent settings over HTTP: stored on layers, resolved at submission with provenance,
stored on the task, shown without MCP env or header values, refused before anything is
stored (straight from the database)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import agent_sessions, node_requests, tasks, workspaces
from tests.control_plane.harness import Running, running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

GITHUB = {
    "name": "github",
    "command": "github-mcp",
    "args": ["stdio"],
    "env": [{"name": "GITHUB_PERSONAL_ACCESS_TOKEN", "value": "ghp_not_to_be_shown"}],
}
SEARCH = {
    "type": "http",
    "name": "search",
    "url": "https://mcp.example/search",
    "headers": [{"name": "Authorization", "value": "Bearer not-to-be-shown"}],
}


async def put(
    cp: Running, path: str, settings: dict[str, Any], user: str, **body: Any
) -> tuple[int, dict[str, Any]]:
    r = await cp.client.put(
        f"/api/defaults/{path}", json={"agentSettings": settings, **body}, headers=cp.user(user)
    )
    found: dict[str, Any] = r.json()
    return r.status_code, found


def counts(cp: Running) -> list[int]:
    with cp.plane.engine.connect() as conn:
        return [
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (tasks, workspaces, agent_sessions, node_requests)
        ]


async def test_layers_resolve_with_provenance_onto_the_task_without_showing_values(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        assert (await put(cp, "users/alice", {"model": "u-model", "env": {"A": "user"}}, "alice"))[
            0
        ] == 201
        status, project = await put(
            cp,
            "projects/p",
            {"mode": "plan", "mcpServers": [GITHUB, SEARCH], "configOptions": {"x": "1"}},
            "alice",
            requirements={"minVcpu": 1},
        )
        assert status == 201
        assert project["requirements"] == {"minVcpu": 1.0}
        # A layer's answer shows MCP env and header names, not their values.
        assert project["agentSettings"]["mcpServers"] == [
            {
                "name": "github",
                "command": "github-mcp",
                "args": ["stdio"],
                "envNames": ["GITHUB_PERSONAL_ACCESS_TOKEN"],
            },
            {
                "type": "http",
                "name": "search",
                "url": "https://mcp.example/search",
                "headerNames": ["Authorization"],
            },
        ]
        got = await cp.client.get("/api/defaults/projects/p", headers=cp.user("alice"))
        assert got.json()["agentSettings"] == project["agentSettings"]
        assert (await put(cp, "agent-profiles/fast", {"effort": "low"}, "alice"))[0] == 201

        body = {
            "taskId": "t1",
            "agent": "claude",
            "prompt": "hi",
            "projectId": "p",
            "agentProfileId": "fast",
            "agentSettings": {"model": "t-model", "env": {"B": "task"}, "configOptions": {}},
        }
        r = await cp.client.post("/api/tasks", json=body, headers=cp.user("alice"))
        assert r.status_code == 201, r.text
        task = {"layer": "task", "layerId": "t1", "version": None}
        proj = {"layer": "project", "layerId": "p", "version": 1}
        shown = {
            "model": {"value": "t-model", **task},
            "mode": {"value": "plan", **proj},
            "effort": {"value": "low", "layer": "agent_profile", "layerId": "fast", "version": 1},
            "configOptions": {"x": {"value": "1", **proj}},
            "mcpServers": [{**s, **proj} for s in project["agentSettings"]["mcpServers"]],
            "env": {
                "B": {"value": "task", **task},
                "A": {"value": "user", "layer": "user", "layerId": "alice", "version": 1},
            },
        }
        assert r.json()["agentSettings"] == shown
        again = await cp.client.get("/api/tasks/t1", headers=cp.user("alice"))
        assert again.json()["agentSettings"] == shown
        assert "not-to-be-shown" not in again.text + r.text + got.text + json.dumps(project)
        # Stored: the resolved values (for the node: every value), and what is shown.
        with cp.plane.engine.connect() as conn:
            values, prov = conn.execute(
                select(tasks.c.agent_settings_json, tasks.c.agent_settings_provenance_json)
            ).one()
        assert json.loads(values) == {
            "model": "t-model",
            "mode": "plan",
            "effort": "low",
            "configOptions": {"x": "1"},
            "mcpServers": [GITHUB, SEARCH],
            "env": {"B": "task", "A": "user"},
        }
        assert json.loads(prov) == shown

        # A task with none set: no values stored (the start carries no agentSettings).
        r = await cp.client.post(
            "/api/tasks",
            json={"taskId": "t2", "agent": "fake", "prompt": "hi"},
            headers=cp.user("bob"),
        )
        assert (r.status_code, r.json()["agentSettings"]) == (201, {})
        with cp.plane.engine.connect() as conn:
            stored = conn.execute(
                select(tasks.c.agent_settings_json).where(tasks.c.client_task_id == "t2")
            ).scalar_one()
        assert stored is None


async def test_another_users_layer_gives_nothing(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        assert (await put(cp, "projects/p", {"model": "alices"}, "alice"))[0] == 201
        r = await cp.client.get("/api/defaults/projects/p?owner=alice", headers=cp.user("bob"))
        assert r.status_code == 404
        before = counts(cp)
        r = await cp.client.post(
            "/api/tasks",
            json={"agent": "fake", "prompt": "hi", "projectId": "alice/p"},
            headers=cp.user("bob"),
        )
        assert (r.status_code, r.json()["error"]) == (
            422,
            "no stored defaults for project 'alice/p'",
        )
        # bob's own `p` is another layer: alice's settings are not his.
        assert (await put(cp, "projects/p", {"mode": "bobs"}, "bob"))[0] == 201
        r = await cp.client.post(
            "/api/tasks",
            json={"agent": "fake", "prompt": "hi", "projectId": "p"},
            headers=cp.user("bob"),
        )
        assert r.json()["agentSettings"] == {
            "mode": {"value": "bobs", "layer": "project", "layerId": "p", "version": 1}
        }
        assert counts(cp) == [before[0] + 1, before[1] + 1, before[2] + 1, before[3]]


REFUSED: list[tuple[str, dict[str, Any], str, str, str]] = [
    # agent, the task's agentSettings, layer, field, a phrase of the message
    ("fake", {"tools": []}, "task", "tools", "unknown field"),
    ("fake", {"model": "x" * 257}, "task", "model", "at most 256 characters"),
    ("fake", {"env": {"A": "x" * 4097}}, "task", "env.A", "longer than 4096 bytes"),
    ("fake", {"env": {"rust_log": "x"}}, "task", "env.rust_log", "[A-Z0-9_]"),
    ("fake", {"env": {"PATH": "/evil"}}, "task", "env.PATH", "node's own"),
    ("fake", {"env": {"LD_PRELOAD": "x.so"}}, "task", "env.LD_PRELOAD", "node's own"),
    ("fake", {"env": {"MY_API_TOKEN": "x"}}, "task", "env.MY_API_TOKEN", "as its credentials"),
    ("claude", {"env": {"ANTHROPIC_BASE_URL": "x"}}, "task", "env.ANTHROPIC_BASE_URL", "agent's"),
    ("fake", {"mcpServers": [SEARCH]}, "task", "mcpServers.search", "stdio only, not http"),
    ("fake", {"mcpServers": [{**GITHUB, "type": "ws"}]}, "task", "mcpServers.0.type", "'sse'"),
    ("fake", {"mcpServers": [GITHUB, GITHUB]}, "task", "mcpServers.1.name", "given twice"),
    (
        "fake",
        {"mcpServers": [{"name": f"s{i}", "command": "x"} for i in range(33)]},
        "task",
        "mcpServers",
        "at most 32",
    ),
    ("fake", {"env": {f"V{i}": "x" for i in range(65)}}, "task", "env", "at most 64"),
]


async def test_refusals_name_layer_and_field_and_store_nothing(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")
        h = cp.user("alice")
        for agent, agent_settings, layer, field, phrase in REFUSED:
            before = counts(cp)
            body = {"agent": agent, "prompt": "hi", "agentSettings": agent_settings}
            r = await cp.client.post("/api/tasks", json=body, headers=h)
            assert r.status_code == 422, (agent_settings, r.text)
            found = r.json()
            assert (found["layer"], found["field"]) == (layer, field), found
            assert phrase in found["error"], found
            assert found["error"].startswith(f"{layer} agentSettings: field {field!r}")
            assert counts(cp) == before
        r = await cp.client.post(
            "/api/tasks", json={"agent": "fake", "prompt": "hi", "agentSettings": []}, headers=h
        )
        assert r.status_code == 422 and counts(cp) == [0, 0, 0, 0]

        # A stored layer: refused at PUT where it can be known there (shape, names)...
        status, found = await put(cp, "users/alice", {"env": {"DB_PASSWORD": "x"}}, "alice")
        assert (status, found["layer"], found["field"]) == (422, "user", "env.DB_PASSWORD")
        status, found = await put(cp, "users/alice", {"env": {"OPENAI_BASE_URL": "x"}}, "alice")
        assert (status, found["field"]) == (422, "env.OPENAI_BASE_URL")  # a built-in's
        r = await cp.client.get("/api/defaults/users/alice", headers=h)
        assert r.status_code == 404  # nothing stored
        # ...and at submission what depends on the task's agent, naming the stored layer.
        assert (await put(cp, "agent-profiles/web", {"mcpServers": [SEARCH]}, "alice"))[0] == 201
        r = await cp.client.post(
            "/api/tasks",
            json={"agent": "fake", "prompt": "hi", "agentProfileId": "web"},
            headers=h,
        )
        found = r.json()
        assert (r.status_code, found["layer"], found["field"]) == (
            422,
            "agent_profile",
            "mcpServers.search",
        )
        assert "agent 'fake' takes MCP servers over stdio only" in found["error"]
        r = await cp.client.post(
            "/api/tasks",
            json={"agent": "claude", "prompt": "hi", "agentProfileId": "web"},
            headers=h,
        )
        assert r.status_code == 201, r.text
        assert counts(cp)[:3] == [1, 1, 1]
