"""The start the dispatcher sends a real daemon carries the task's resolved agent settings
(`agentSettings`, the values only), and none when nothing is set. Asserted on what was
sent (each `session/start` recorded on its way out), not on what the agent made of it:
that is the node's (tests/daemon)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from control_plane.nodes_link.links import NodeLinks
from tests.dispatch.harness import WAIT_S, stack

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
