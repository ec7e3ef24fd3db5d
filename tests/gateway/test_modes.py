"""Mode and config changes through the gateway: the client's `session/set_mode` and
`session/set_config_option` reach the remote agent (the fake agent with `--modes`) through
the daemon's viewer API, are recorded in the session's log, and the agent's refusals come
back as its own JSON-RPC errors; `session/new` and `session/load` answer the modes and
config options the remote agent offered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.daemon.harness import NODE, Viewer
from tests.gateway.harness import INIT, AcpClient, daemon, gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

AGENTS = {"modes": ("--scenario", "echo", "--modes"), "plain": ("--scenario", "echo")}


async def error_of(client: AcpClient, method: str, params: Any) -> dict[str, Any]:
    reply = await client.answer(await client.send(method, params))
    assert "error" in reply, reply
    error: dict[str, Any] = reply["error"]
    return error


async def test_modes_and_config_options_reach_the_remote_agent(tmp_path: Path) -> None:
    async with daemon(tmp_path, AGENTS) as d:
        token = d.plane.viewer_token()
        args = ("--agent", "modes", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, token, *args) as client:
            await client.call("initialize", INIT)
            new = await client.call("session/new", {"cwd": "/x", "mcpServers": []})
            sid = new["sessionId"]
            # What the remote agent offered, as it offered it.
            assert new["modes"]["currentModeId"] == "ask"
            assert [m["id"] for m in new["modes"]["availableModes"]] == ["ask", "code"]
            assert new["configOptions"][0]["id"] == "model"
            assert new["configOptions"][0]["currentValue"] == "fast"

            assert await client.call("session/set_mode", {"sessionId": sid, "modeId": "code"}) == {}
            await client.until(
                lambda: any(
                    u["update"] == {"sessionUpdate": "current_mode_update", "currentModeId": "code"}
                    for u in client.updates(sid)
                )
            )
            change = {"sessionId": sid, "configId": "model", "value": "smart"}
            answer = await client.call("session/set_config_option", change)
            assert answer["configOptions"][0]["currentValue"] == "smart"

            # The agent's refusals, as it said them; ours for what never reaches it.
            error = await error_of(client, "session/set_mode", {"sessionId": sid, "modeId": "x"})
            assert (error["code"], error["message"]) == (-32602, "Invalid params: no mode 'x'")
            bad = {"sessionId": sid, "configId": "model", "value": "huge"}
            error = await error_of(client, "session/set_config_option", bad)
            assert error["code"] == -32602 and "no value 'huge'" in error["message"]
            error = await error_of(client, "session/set_mode", {"sessionId": sid})
            assert error["code"] == -32602 and "modeId" in error["message"]
            error = await error_of(client, "session/set_mode", {"sessionId": "nope", "modeId": "a"})
            assert error["code"] == -32002
            error = await error_of(client, "session/set_mode", ["not", "an", "object"])
            assert error["code"] == -32602

            # A prompt still runs as before.
            prompt = {"sessionId": sid, "prompt": [{"type": "text", "text": "hi"}]}
            assert (await client.call("session/prompt", prompt))["stopReason"] == "end_turn"

        # Another gateway loading the session is told the modes as they are now.
        async with gateway(tmp_path, d.url, token) as other:
            await other.call("initialize", INIT)
            loaded = await other.call(
                "session/load", {"sessionId": sid, "cwd": "/x", "mcpServers": []}
            )
            assert loaded["modes"]["currentModeId"] == "code"
            assert loaded["configOptions"][0]["currentValue"] == "smart"

        # Each change the agent took is in the session's log, with who asked for it.
        async with Viewer.connect(d.url, d.plane.viewer_token(("read",))) as viewer:
            await viewer.call("session/subscribe", {"session_id": sid})
            changed = await viewer.until(lambda e: e["type"] == "agent.settings_changed")
            assert changed["data"] == {
                "method": "session/set_mode", "params": {"modeId": "code"}, "by": "dev-viewer",
            }  # fmt: skip
            await viewer.until(
                lambda e: (
                    e["type"] == "agent.settings_changed"
                    and e["data"]["params"] == {"configId": "model", "value": "smart"}
                )
            )
            kinds = [
                e["data"]["params"] for e in viewer.events if e["type"] == "agent.settings_changed"
            ]
            assert len(kinds) == 2  # the refused ones were not recorded
            # Reading them needs `read`; changing them `write` (-32003 without).
            settings = await viewer.call("session/settings", {"session_id": sid})
            assert settings["modes"]["currentModeId"] == "code"
            with pytest.raises(RuntimeError, match="-32003"):
                await viewer.call("session/set_mode", {"session_id": sid, "mode_id": "ask"})
        # Another user's session: the same -32003 as for every method, nothing changed.
        mallory = d.plane.plane.tokens.mint_viewer_token(NODE, ["read", "write"], subject="m")
        async with Viewer.connect(d.url, mallory) as other_user:
            for method, params in [
                ("session/set_mode", {"session_id": sid, "mode_id": "ask"}),
                (
                    "session/set_config_option",
                    {"session_id": sid, "config_id": "model", "value": "fast"},
                ),
                ("session/settings", {"session_id": sid}),
            ]:
                with pytest.raises(RuntimeError, match="-32003"):
                    await other_user.call(method, params)
        async with Viewer.connect(d.url, token) as writer:
            settings = await writer.call("session/settings", {"session_id": sid})
            assert settings["modes"]["currentModeId"] == "code"
            for bad_params in [
                {"session_id": sid, "mode_id": ""},
                {"session_id": sid, "mode_id": "code", "extra": 1},
                {"session_id": sid, "config_id": "model", "value": 5},
            ]:
                method = (
                    "session/set_config_option" if "value" in bad_params else "session/set_mode"
                )
                with pytest.raises(RuntimeError, match="-32602"):
                    await writer.call(method, bad_params)


async def test_an_agent_without_modes_answers_with_its_own_error(tmp_path: Path) -> None:
    async with daemon(tmp_path, AGENTS) as d:
        args = ("--agent", "plain", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, d.plane.viewer_token(), *args) as client:
            await client.call("initialize", INIT)
            new = await client.call("session/new", {"cwd": "/x", "mcpServers": []})
            assert "modes" not in new and "configOptions" not in new  # it offered none
            sid = new["sessionId"]
            error = await error_of(client, "session/set_mode", {"sessionId": sid, "modeId": "a"})
            assert error == {"code": -32601, "message": "Method not found: session/set_mode"}
            change = {"sessionId": sid, "configId": "x", "type": "boolean", "value": True}
            error = await error_of(client, "session/set_config_option", change)
            assert error["code"] == -32601


async def test_a_recovery_sets_the_last_mode_and_option_again(tmp_path: Path) -> None:
    state = tmp_path / "agent-state"
    flags = ("--scenario", "crash-mid-prompt", "--once", "--state-dir", str(state), "--modes")
    async with daemon(tmp_path, {"crashy": (*flags, "--chunks", "4", "--after-chunks", "2")}) as d:
        args = ("--agent", "crashy", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, d.plane.viewer_token(), *args) as client:
            await client.call("initialize", INIT)
            sid = (await client.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            await client.call("session/set_mode", {"sessionId": sid, "modeId": "code"})
            change = {"sessionId": sid, "configId": "model", "value": "smart"}
            await client.call("session/set_config_option", change)
            prompt = {"sessionId": sid, "prompt": [{"type": "text", "text": "abcdefgh"}]}
            answer = await client.call("session/prompt", prompt)
            assert answer["_meta"]["vm-agent"]["outcome"] == "recovered"
        async with Viewer.connect(d.url, d.plane.viewer_token()) as viewer:
            settings = await viewer.call("session/settings", {"session_id": sid})
            # The new process started in "ask" (its load answered so) and was set again:
            # the daemon keeps what the agent's answers said.
            assert settings["modes"]["currentModeId"] == "code"
            assert settings["configOptions"][0]["currentValue"] == "smart"
