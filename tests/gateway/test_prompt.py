"""A client drives `vm-agent acp` over real pipes against `vm-agent serve` on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.gateway.harness import INIT, allow, daemon, gateway
from vm_agent.fake_agent.tools import FILE_CONTENT, OUTPUT_FILE

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]


async def test_a_prompt_with_tool_calls_and_a_permission_the_client_answers(
    tmp_path: Path,
) -> None:
    asked: list[dict[str, Any]] = []

    async def client_side(method: str, params: Any) -> Any:
        assert method == "session/request_permission"
        asked.append(params)
        return allow(params["options"])

    async with daemon(tmp_path, {"tools": ("--scenario", "tools")}) as d:
        token = d.plane.viewer_token()
        args = ("--agent", "tools", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, token, *args, on_request=client_side) as client:
            init = await client.call("initialize", INIT)
            caps = init["agentCapabilities"]
            assert init["protocolVersion"] == 1
            assert caps["loadSession"] is True
            assert caps["sessionCapabilities"] == {"list": {}}
            assert "on the VM" in caps["_meta"]["vm-agent"]["tools"]["fs"]
            new = await client.call("session/new", {"cwd": "/elsewhere", "mcpServers": []})
            sid = new["sessionId"]
            prompt = [{"type": "text", "text": "write the file"}]
            answer = await client.call("session/prompt", {"sessionId": sid, "prompt": prompt})
            assert answer["stopReason"] == "end_turn"
            assert answer["_meta"]["vm-agent"]["outcome"] == "completed"
            # The agent asked through the client, with the gateway's session id.
            assert len(asked) == 1
            assert asked[0]["sessionId"] == sid
            assert asked[0]["toolCall"]["toolCallId"] == "fake-tool-1"
            # Its tools ran on the VM (--cwd), not through this client.
            assert (d.work / OUTPUT_FILE).read_text() == FILE_CONTENT
            assert not [r for r in client.requests if r["method"] != "session/request_permission"]
            updates = [u["update"] for u in client.updates(sid)]
            kinds = [u["sessionUpdate"] for u in updates]
            assert kinds[0] == "tool_call"
            statuses = [
                u.get("status") for u in updates if u["sessionUpdate"] == "tool_call_update"
            ]
            assert statuses == ["in_progress", "completed"]
            assert kinds[-1] == "agent_message_chunk"
            # Every update arrived before the prompt's answer (its line comes last).
            last = client.lines[-1]
            assert b'"stopReason"' in last
            # Exactly as the agent sent them: the daemon's log holds the same updates.
            assert updates == await _logged_updates(d.url, token, sid)
            await client.close_stdin()
            assert await client.process.wait() == 0


async def _logged_updates(url: str, token: str, sid: str) -> list[dict[str, Any]]:
    from tests.daemon.harness import Viewer

    async with Viewer.connect(url, token) as viewer:
        head = (await viewer.call("session/subscribe", {"session_id": sid}))["head_seq"]
        await viewer.until(lambda e: e["seq"] == head)
    return [e["data"]["update"] for e in viewer.events if e["type"] == "acp.update"]


async def test_session_cancel_ends_the_prompt_as_cancelled(tmp_path: Path) -> None:
    flags = ("--scenario", "slow", "--chunks", "200", "--delay-ms", "50")
    async with daemon(tmp_path, {"slow": flags}) as d:
        args = ("--agent", "slow", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, d.plane.viewer_token(), *args) as client:
            await client.call("initialize", INIT)
            sid = (await client.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            prompt = [{"type": "text", "text": "x" * 200}]
            msg_id = await client.send("session/prompt", {"sessionId": sid, "prompt": prompt})
            await client.until(lambda: len(client.updates(sid)) >= 2)
            await client.send("session/cancel", {"sessionId": sid}, notify=True)
            reply = await client.answer(msg_id)
            assert reply["result"]["stopReason"] == "cancelled"
            assert len(client.updates(sid)) < 200
