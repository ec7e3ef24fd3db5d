"""The start the dispatcher sends a real daemon carries the task's resolved agent settings
(`agentSettings`, the values only), and none when nothing is set. Asserted on what was
sent (each `session/start` recorded on its way out), not on what the agent made of it:
that is the node's (tests/daemon). And the owner's mode/model change of a running task
reaches its session (the fake agent with modes takes what it offers, refuses the rest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from control_plane.nodes_link.links import NodeLinks
from tests.dispatch.harness import WAIT_S, stack
from vm_agent.fake_agent.record import read_record
from vm_agent.process.catalog import fake_agent_command

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ENDED = ("completed", "failed", "crashed", "timed_out", "cancelled", "auth_required")
FILES = {
    "name": "files",
    "command": "mcp-files",
    "args": ["--root", "/w"],
    "env": [{"name": "MCP_FILES_TOKEN", "value": "for-the-node-only"}],
}
SMALL = {"minVcpu": 0.1, "minMemoryGb": 0.1, "minDiskGb": 0.1}  # both fit on the one node


async def test_start_params_carry_the_resolved_agent_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[dict[str, Any]] = []
    call = NodeLinks.call

    async def recording(
        self: NodeLinks, target: Any, method: str, params: dict[str, Any], *, limit_s: float
    ) -> Any:
        if method == "session/start":
            starts.append(params)
        return await call(self, target, method, params, limit_s=limit_s)

    monkeypatch.setattr(NodeLinks, "call", recording)
    async with stack(tmp_path) as s:
        r = await s.client.put(
            "/api/defaults/users/alice",
            json={"agentSettings": {"model": "user-model", "env": {"RUST_LOG": "debug"}}},
            headers=s.user("alice"),
        )
        assert r.status_code == 201, r.text

        await s.submit("bob", taskId="plain", agent="fake", prompt="hi", requirements=SMALL)
        with anyio.fail_after(WAIT_S):
            while not starts:
                await anyio.sleep(0.05)
        assert "agentSettings" not in starts[0]  # nothing set: no field at all
        await s.until("plain", *ENDED, user="bob")

        settings = {"mode": "plan", "mcpServers": [FILES], "configOptions": {"effort": "high"}}
        made = await s.submit(
            taskId="set", agent="fake", prompt="hi", agentSettings=settings, requirements=SMALL
        )
        assert made["agentSettings"]["model"]["layer"] == "user"
        with anyio.fail_after(WAIT_S):
            while len(starts) < 2:
                await anyio.sleep(0.05)
        assert starts[1]["session_id"] == made["sessionId"]
        assert starts[1]["agentSettings"] == {
            "model": "user-model",
            "mode": "plan",
            "configOptions": {"effort": "high"},
            "mcpServers": [FILES],  # every value, for the node
            "env": {"RUST_LOG": "debug"},
        }
        # Whatever the node made of it, the task moves on (not left starting).
        await s.until("set", *ENDED, "running", "awaiting_follow_up")


def _modes_agent(tmp_path: Path) -> str:
    """A catalog entry (TOML) for the fake agent offering modes and a model option."""
    command = fake_agent_command(
        "--scenario", "echo", "--modes", "--state-dir", str(tmp_path / "agent-state")
    )
    return f"[agents.fake-modes]\ncommand = {json.dumps(list(command))}\n"


async def test_a_mode_and_model_change_reaches_the_running_session(tmp_path: Path) -> None:
    async with stack(tmp_path, extra_agents=_modes_agent(tmp_path)) as s:
        await s.submit(taskId="m", agent="fake-modes", prompt="hi", followUps=True)
        await s.until("m", "awaiting_follow_up")
        path = "/api/tasks/m/settings"
        for body in ({}, {"mode": ""}, {"effort": "high"}, {"mode": 1}):
            r = await s.client.post(path, json=body, headers=s.user())
            assert r.status_code == 422, (body, r.text)
        # The owner only: another user, and an admin naming the owner, get no such task.
        admin = {"Authorization": f"Bearer {s.plane.tokens.mint_user_token('ops', admin=True)}"}
        for headers, query in ((s.user("bob"), ""), (admin, "?owner=alice")):
            r = await s.client.post(path + query, json={"mode": "code"}, headers=headers)
            assert (r.status_code, r.json()["error"]) == (404, "no such task")
        r = await s.client.post(path, json={"mode": "code", "model": "smart"}, headers=s.user())
        assert r.status_code == 202, r.text
        asked = r.json()["changes"]
        assert [(c["field"], c["value"]) for c in asked] == [("mode", "code"), ("model", "smart")]

        def relayed(t: dict[str, Any]) -> bool:
            changes = t.get("settingChanges") or []
            return bool(changes) and all(c["sentAt"] for c in changes)

        seen = await s.eventually("m", relayed)
        assert [(c["field"], c["value"], c["error"]) for c in seen["settingChanges"]] == [
            ("mode", "code", None),  # the agent took both (it refuses what it does not offer)
            ("model", "smart", None),
        ]
        r = await s.client.post(path, json={"mode": "no-such-mode"}, headers=s.user())
        assert r.status_code == 202
        seen = await s.eventually("m", lambda t: relayed(t) and len(t["settingChanges"]) == 3)
        assert "the node refused" in seen["settingChanges"][2]["error"]
        assert seen["status"] == "awaiting_follow_up"  # a refused change ends nothing
        r = await s.client.post("/api/tasks/m/close", headers=s.user())
        await s.until("m", "completed")
        r = await s.client.post(path, json={"mode": "ask"}, headers=s.user())
        assert r.status_code == 409 and "task ended (completed)" in r.json()["error"]


async def test_a_tasks_settings_reach_its_agent(tmp_path: Path) -> None:
    """The whole path: layers resolved at submission, carried by the dispatcher, applied by
    the daemon (MCP servers at session/new, the environment, mode and options set), and the
    task completes."""
    log = tmp_path / "agent-record.jsonl"
    command = fake_agent_command(
        "--scenario", "echo", "--modes", "--record", str(log),
        "--state-dir", str(tmp_path / "agent-state"),
    )  # fmt: skip
    entry = f"[agents.fake-rec]\ncommand = {json.dumps(list(command))}\n"
    async with stack(tmp_path, extra_agents=entry) as s:
        r = await s.client.put(
            "/api/defaults/users/alice",
            json={"agentSettings": {"model": "smart", "env": {"RUST_LOG": "debug"}}},
            headers=s.user("alice"),
        )
        assert r.status_code == 201, r.text
        settings = {"mode": "code", "effort": "high", "mcpServers": [FILES]}
        await s.submit(taskId="rec", agent="fake-rec", prompt="hi", agentSettings=settings)
        done = await s.until("rec", *ENDED)
        assert done["status"] == "completed", done
    seen = read_record(log)
    [env] = [e["env"] for e in seen if e["method"] == "initialize"]
    assert env.get("RUST_LOG") == "debug"
    [new] = [e["params"] for e in seen if e["method"] == "session/new"]
    assert new["mcpServers"] == [FILES]  # every value reaches the agent, and only there
    assert [e["params"]["modeId"] for e in seen if e["method"] == "session/set_mode"] == ["code"]
    options = [e["params"] for e in seen if e["method"] == "session/set_config_option"]
    assert {(o["configId"], o["value"]) for o in options} == {
        ("model", "smart"),
        ("effort", "high"),
    }
