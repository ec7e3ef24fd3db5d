"""Agent crashes on the VM, as the gateway's client sees them: a crash the daemon recovers
is the update stream going on; one it cannot recover ends the prompt with an ACP error
carrying the crash report's summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.harness import INIT, daemon, gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]


async def test_a_crash_the_daemon_recovers_ends_the_turn_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    state = tmp_path / "agent-state"
    flags: tuple[str, ...] = ("--scenario", "crash-mid-prompt", "--once", "--state-dir", str(state))
    flags += ("--chunks", "4", "--after-chunks", "2")
    async with daemon(tmp_path, {"crashy": flags}) as d:
        args = ("--agent", "crashy", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, d.plane.viewer_token(), *args) as client:
            await client.call("initialize", INIT)
            sid = (await client.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            text = "abcdefghijklmnop"
            prompt = [{"type": "text", "text": text}]
            answer = await client.call("session/prompt", {"sessionId": sid, "prompt": prompt})
            assert answer["stopReason"] == "end_turn"
            meta = answer["_meta"]["vm-agent"]
            assert meta["outcome"] == "recovered"
            assert "new process loaded the session" in meta["crashReport"]
            before = len(client.updates(sid))
            assert before == 2  # the chunks sent before the crash, once each
            # The same session, now served by a new agent process, takes the next prompt.
            answer = await client.call("session/prompt", {"sessionId": sid, "prompt": prompt})
            assert answer["stopReason"] == "end_turn"
            assert answer["_meta"]["vm-agent"]["outcome"] == "completed"
            chunks = [u["update"]["content"]["text"] for u in client.updates(sid)[before:]]
            assert "".join(chunks) == text


async def test_a_crash_the_daemon_cannot_recover_is_an_acp_error_with_its_summary(
    tmp_path: Path,
) -> None:
    state = tmp_path / "agent-state"
    flags = ("--scenario", "no-load", "--once", "--state-dir", str(state))
    async with daemon(tmp_path, {"noload": flags}) as d:
        args = ("--agent", "noload", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, d.plane.viewer_token(), *args) as client:
            await client.call("initialize", INIT)
            sid = (await client.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            prompt = [{"type": "text", "text": "hello world"}]
            msg_id = await client.send("session/prompt", {"sessionId": sid, "prompt": prompt})
            reply = await client.answer(msg_id)
            error = reply["error"]
            assert error["code"] == -32603
            report = error["data"]["crashReport"]
            assert report["recovered"] is False
            assert error["message"] == f"the agent crashed: {report['message']}"
            assert error["data"]["outcome"]["outcome"] == "crashed"
