"""`vm-agent acp` over wss:// checks the daemon's certificate against --ca-file; usage
errors exit 2 before anything connects."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.daemon.harness import base_env, vm_agent
from tests.gateway.harness import INIT, daemon, gateway
from tests.tlsca import make_tls_files

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]


async def _acp(*args: str) -> tuple[int, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            vm_agent("acp", *args), env=base_env(), check=False, input=b""
        )
    assert done.stdout == b""  # stdout is the client's: nothing but ACP ever goes there
    return done.returncode, done.stderr.decode()


async def test_the_gateway_over_wss_verifies_the_daemon(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls")
    tls = {
        "VM_AGENT_TLS_CERT_FILE": str(files.cert_file),
        "VM_AGENT_TLS_KEY_FILE": str(files.key_file),
    }
    async with daemon(tmp_path, {"echo": ("--scenario", "echo")}, **tls) as d:
        assert d.url.startswith("wss://")
        token = d.plane.viewer_token()
        args = ("--ca-file", str(files.ca_file), "--agent", "echo", "--cwd", str(d.work))
        async with gateway(tmp_path, d.url, token, *args) as client:
            await client.call("initialize", INIT)
            sid = (await client.call("session/new", {"cwd": "/x", "mcpServers": []}))["sessionId"]
            prompt = [{"type": "text", "text": "over tls"}]
            answer = await client.call("session/prompt", {"sessionId": sid, "prompt": prompt})
            assert answer["stopReason"] == "end_turn"
        # The system's CAs do not know this one: exit 1 with the reason.
        code, err = await _acp("--url", d.url, "--token", token, "--agent", "echo")
        assert code == 1
        assert "certificate verify failed" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--url", "http://h/v1/ws", "--token", "t"), "--url must be a ws:// or wss:// URL"),
        (("--url", "ws://h/v1/ws"), "give --token or set VM_AGENT_TOKEN"),
        (("--url", "ws://h/v1/ws", "--token", "t", "--ca-file", "x.pem"), "goes with a wss://"),
        (("--url", "ws://h/v1/ws", "--token", "t", "--cwd", "/w"), "--cwd goes with --agent"),
        (("--url", "ws://h/v1/ws", "--token", "t", "--agent", "a", "--cwd", "w"), "absolute"),
        (("--url", "wss://h/v1/ws", "--token", "t", "--ca-file", "/nonexistent.pem"), "--ca-file"),
    ],
)
async def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    code, err = await _acp(*args)
    assert code == 2
    assert message in err
