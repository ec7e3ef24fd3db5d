"""Bad input from the client gets ACP's JSON-RPC errors and the gateway goes on; it exits
0 when the client closes its stdin, and 1 when the daemon refuses its token."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.daemon.harness import Viewer, base_env, vm_agent
from tests.gateway.harness import INIT, daemon, gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]


async def test_bad_input_gets_acp_errors_and_stdin_closed_exits_zero(tmp_path: Path) -> None:
    async with daemon(tmp_path, {"echo": ("--scenario", "echo")}) as d:
        args = ("--agent", "echo", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, d.plane.viewer_token(), *args) as client:
            await client.call("initialize", INIT)
            cases = [
                ("session/set_mode", {"sessionId": "x", "modeId": "y"}, -32002),
                ("session/set_config_option", {"sessionId": "x", "configId": "y"}, -32602),
                ("authenticate", {"methodId": "x"}, -32601),  # the token is the authentication
                ("no/such_method", {}, -32601),
                ("session/new", {"cwd": "/x"}, -32602),  # mcpServers missing
                ("session/new", [1, 2], -32602),
                ("session/prompt", {"sessionId": "nope", "prompt": "text"}, -32602),
                ("session/prompt", {"sessionId": "nope", "prompt": []}, -32002),
                ("session/load", {"sessionId": "nope", "cwd": "/x", "mcpServers": []}, -32002),
                ("session/list", {"cwd": 5}, -32602),
                ("initialize", {"clientInfo": {"name": "x"}}, -32602),  # no protocolVersion
            ]
            for method, params, code in cases:
                reply = await client.answer(await client.send(method, params))
                assert reply.get("error", {}).get("code") == code, (method, params, reply)
                assert reply["error"]["message"]
            # Not JSON, and JSON that is not a request: answered, never fatal.
            await client.send_line(b"this is not json")
            assert (await client.answer(None))["error"]["code"] == -32700
            await client.send_line(b'{"jsonrpc": "2.0", "id": 77, "params": {}}')
            assert (await client.answer(77))["error"]["code"] == -32600
            # A malformed cancel is a notification: nothing to answer, nothing breaks.
            await client.send("session/cancel", {"nope": 1}, notify=True)
            sid = (await client.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            prompt = [{"type": "text", "text": "still here"}]
            answer = await client.call("session/prompt", {"sessionId": sid, "prompt": prompt})
            assert answer["stopReason"] == "end_turn"
            await client.close_stdin()
            with anyio.fail_after(30):
                assert await client.process.wait() == 0
    assert "Traceback" not in (tmp_path / "gateway.err").read_text()


async def test_without_agent_or_session_it_only_lists_and_loads(tmp_path: Path) -> None:
    async with (
        daemon(tmp_path, {"echo": ("--scenario", "echo")}) as d,
        gateway(tmp_path, d.url, d.plane.viewer_token()) as client,
    ):
        await client.call("initialize", INIT)
        reply = await client.answer(
            await client.send("session/new", {"cwd": "/x", "mcpServers": []})
        )
        assert reply["error"]["code"] == -32600
        assert "--agent" in reply["error"]["message"]
        assert await client.call("session/list", None) == {"sessions": []}


async def test_a_refused_token_exits_one_with_the_reason(tmp_path: Path) -> None:
    async with daemon(tmp_path, {"echo": ("--scenario", "echo")}) as d:
        argv = vm_agent("acp", "--url", d.url, "--token", "not-a-token", "--agent", "echo")
        with anyio.fail_after(60):
            result = await anyio.run_process(argv, env=base_env(), check=False, input=b"")
        assert result.returncode == 1
        assert b"refused the token (HTTP 401)" in result.stderr
        assert result.stdout == b""


async def test_stdin_closed_mid_prompt_exits_zero_and_the_prompt_goes_on(tmp_path: Path) -> None:
    flags = ("--scenario", "slow", "--chunks", "20", "--delay-ms", "50")
    async with daemon(tmp_path, {"slow": flags}) as d:
        token = d.plane.viewer_token()
        args = ("--agent", "slow", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, token, *args) as client:
            await client.call("initialize", INIT)
            sid = (await client.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            prompt = [{"type": "text", "text": "y" * 20}]
            await client.send("session/prompt", {"sessionId": sid, "prompt": prompt})
            await client.until(lambda: len(client.updates(sid)) >= 1)
            await client.close_stdin()
            with anyio.fail_after(30):
                assert await client.process.wait() == 0
        # The prompt belongs to the daemon: it ends there, and the log says how.
        async with Viewer.connect(d.url, token) as viewer:
            await viewer.call("session/subscribe", {"session_id": sid})
            finished = await viewer.until(lambda e: e["type"] == "prompt.finished")
        assert finished["data"]["outcome"] == "completed"
