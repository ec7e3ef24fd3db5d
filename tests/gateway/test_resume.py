"""The gateway's connection to the daemon is cut mid-prompt and resumed from the last seq;
a later gateway process loads the session and gets its history from the durable log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.daemon.test_attach import CuttingProxy
from tests.gateway.harness import INIT, allow, daemon, gateway
from vm_agent.fake_agent.tools import FILE_CONTENT, OUTPUT_FILE

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]


async def test_a_cut_connection_is_resumed_with_no_update_lost_or_repeated(
    tmp_path: Path,
) -> None:
    flags = ("--scenario", "slow", "--chunks", "30", "--delay-ms", "30")
    async with daemon(tmp_path, {"slow": flags}) as d, anyio.create_task_group() as tg:
        proxy = CuttingProxy(int(d.url.split(":")[2].split("/")[0]))
        url = f"ws://127.0.0.1:{await tg.start(proxy.serve)}/v1/ws"
        args = ("--agent", "slow", "--cwd", str(d.work))
        async with gateway(tmp_path, url, d.plane.viewer_token(), *args) as client:
            await client.call("initialize", INIT)
            sid = (await client.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            text = "".join(f"<{i:02d}>" for i in range(30))
            prompt = [{"type": "text", "text": text}]
            msg_id = await client.send("session/prompt", {"sessionId": sid, "prompt": prompt})
            await client.until(lambda: len(client.updates(sid)) >= 3)
            proxy.cut()
            reply = await client.answer(msg_id)
            assert reply["result"]["stopReason"] == "end_turn"
            chunks = [u["update"]["content"]["text"] for u in client.updates(sid)]
            assert len(chunks) == 30
            assert "".join(chunks) == text  # none lost, none twice, in order
            assert proxy.connections >= 2
            # The same connection serves the next prompt.
            answer = await client.call("session/prompt", {"sessionId": sid, "prompt": prompt})
            assert answer["stopReason"] == "end_turn"
        tg.cancel_scope.cancel()
    assert "dropped" in (tmp_path / "gateway.err").read_text()


async def test_session_load_replays_the_history_and_list_shows_the_session(
    tmp_path: Path,
) -> None:
    async with daemon(tmp_path, {"echo": ("--scenario", "echo", "--chunks", "3")}) as d:
        token = d.plane.viewer_token()
        args = ("--agent", "echo", "--cwd", str(d.work))
        prompt = [{"type": "text", "text": "first question"}]
        async with gateway(tmp_path, d.url, token, *args) as first:
            await first.call("initialize", INIT)
            sid = (await first.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            await first.call("session/prompt", {"sessionId": sid, "prompt": prompt})
            said = [u["update"] for u in first.updates(sid)]
            await first.close_stdin()
            assert await first.process.wait() == 0

        async with gateway(tmp_path, d.url, token) as second:
            init = await second.call("initialize", INIT)
            assert init["agentCapabilities"]["loadSession"] is True
            listing = await second.call("session/list", {})
            (info,) = listing["sessions"]
            assert info["sessionId"] == sid
            assert info["cwd"] == str(d.work)
            assert info["_meta"]["vm-agent"]["agent"] == "echo"
            assert (await second.call("session/list", {"cwd": "/nowhere"}))["sessions"] == []
            load = {"sessionId": sid, "cwd": str(d.work), "mcpServers": []}
            assert await second.call("session/load", load) == {}
            replayed = [u["update"] for u in second.updates(sid)]
            # The user's turn, then the agent's answer exactly as it was first relayed.
            user = {"sessionUpdate": "user_message_chunk", "content": prompt[0]}
            assert replayed == [user, *said]
            # The loaded session takes prompts from here.
            again = [{"type": "text", "text": "second"}]
            answer = await second.call("session/prompt", {"sessionId": sid, "prompt": again})
            assert answer["stopReason"] == "end_turn"
            assert len(second.updates(sid)) == len(replayed) + 3


async def test_a_permission_still_open_is_asked_of_the_client_that_loads_the_session(
    tmp_path: Path,
) -> None:
    async def allow_it(method: str, params: Any) -> Any:
        return allow(params["options"])

    async def never(method: str, params: Any) -> Any:
        await anyio.sleep_forever()

    async with daemon(tmp_path, {"tools": ("--scenario", "tools")}) as d:
        token = d.plane.viewer_token()
        args = ("--agent", "tools", "--cwd", str(d.work))
        # The first client never answers the agent's question, and leaves.
        async with gateway(tmp_path, d.url, token, *args, on_request=never) as first:
            await first.call("initialize", INIT)
            sid = (await first.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            prompt = [{"type": "text", "text": "write the file"}]
            await first.send("session/prompt", {"sessionId": sid, "prompt": prompt})
            await first.until(lambda: bool(first.requests))
            await first.close_stdin()
            assert await first.process.wait() == 0

        async with gateway(tmp_path, d.url, token, on_request=allow_it) as second:
            await second.call("initialize", INIT)
            load = {"sessionId": sid, "cwd": str(d.work), "mcpServers": []}
            assert await second.call("session/load", load) == {}
            # Asked after the replay, answered, and the agent's turn goes on to its end.
            await second.until(
                lambda: _statuses(second.updates(sid)) == ["in_progress", "completed"]
            )
            (asked,) = second.requests
            assert asked["method"] == "session/request_permission"
            # Asked only once the client has the session: after session/load's answer.
            order = [json.loads(line).get("method", "answer") for line in second.lines]
            assert order.index("session/request_permission") > order.index("answer")
            assert asked["params"]["sessionId"] == sid
            assert (d.work / OUTPUT_FILE).read_text() == FILE_CONTENT


def _statuses(updates: list[dict[str, Any]]) -> list[str]:
    return [
        u["update"]["status"] for u in updates if u["update"]["sessionUpdate"] == "tool_call_update"
    ]
