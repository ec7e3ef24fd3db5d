"""A published ACP client no one here wrote (`acpx`, pinned in agents/) runs `vm-agent acp`
as its agent, against `vm-agent serve` on loopback with the fake agent; and the real Claude
Code agent behind the gateway, against the scripted model.

acpx and the gateway it starts run in a network namespace where only loopback exists (an
npm program reaches nothing past this machine); the gateway reaches the daemon through a
forward from the namespace's loopback to a Unix socket that the test pipes to the daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream, TaskStatus

from tests.gateway.harness import INIT, allow, daemon, gateway
from tests.real_agents.agents import BIN, JAIL, KITS, SYSTEM_PATH, require_real_agents
from tests.real_agents.harness import WAIT_S, rig
from tests.real_agents.harness import daemon as real_daemon
from tests.real_agents.model_api import Reply
from vm_agent.fake_agent.tools import FILE_CONTENT, OUTPUT_FILE

pytestmark = [pytest.mark.real_agents, pytest.mark.anyio, pytest.mark.timeout(600)]

ACPX = BIN / "acpx"
# The daemon's port as the gateway sees it, on the namespace's own loopback.
DAEMON_PORT = 18766
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


@pytest.fixture(autouse=True)
def _acpx() -> None:
    reason = None
    if not ACPX.exists() or not (BIN / "node").exists():
        reason = f"{ACPX} is missing (run `cd agents && npm ci`)"
    elif shutil.which("unshare") is None:
        reason = "unshare (util-linux) is missing"
    if reason is not None:
        # As require_real_agents: a CI run that cannot run it fails rather than skips.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


async def _pipe_to_daemon(
    path: Path, port: int, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    async def handle(client: ByteStream) -> None:
        with contextlib.suppress(*_GONE):
            async with (
                client,
                await anyio.connect_tcp("127.0.0.1", port) as upstream,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(_copy, client, upstream, tg.cancel_scope)
                tg.start_soon(_copy, upstream, client, tg.cancel_scope)

    async with await anyio.create_unix_listener(path) as listener:
        task_status.started()
        await listener.serve(handle)


async def _copy(src: ByteStream, dst: ByteStream, done: anyio.CancelScope) -> None:
    with contextlib.suppress(*_GONE):
        async for chunk in src:
            await dst.send(chunk)
    done.cancel()


async def test_acpx_runs_the_gateway_for_a_prompt_with_tool_calls(tmp_path: Path) -> None:
    async with (
        daemon(tmp_path, {"tools": ("--scenario", "tools")}) as d,
        anyio.create_task_group() as tg,
    ):
        with tempfile.TemporaryDirectory(prefix="vmgw-") as short:
            sock = Path(short) / "daemon.sock"
            await tg.start(_pipe_to_daemon, sock, int(d.url.split(":")[2].split("/")[0]))
            gateway = [
                sys.executable, "-m", "vm_agent", "acp",
                "--url", f"ws://127.0.0.1:{DAEMON_PORT}/v1/ws",
                "--agent", "tools", "--cwd", str(d.work),
            ]  # fmt: skip
            argv = [
                shutil.which("unshare") or "unshare", "--net", "--map-root-user", "--",
                sys.executable, str(JAIL), "--forward", f"{DAEMON_PORT}={sock}", "--",
                str(ACPX), "--agent", " ".join(gateway), "--cwd", str(d.work),
                "--approve-all", "--format", "json", "exec", "write the file",
            ]  # fmt: skip
            home = tmp_path / "home"
            home.mkdir()
            env = {
                "PATH": f"{BIN}:{SYSTEM_PATH}",
                "HOME": str(home),
                "LANG": "C.UTF-8",
                "VM_AGENT_TOKEN": d.plane.viewer_token(),
            }
            with anyio.fail_after(300):
                done = await anyio.run_process(argv, env=env, cwd=d.work, check=False)
        tg.cancel_scope.cancel()
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"{out}\n{err}"
    # With --format json acpx prints the ACP traffic, both ways, one message a line.
    wire = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    calls = [msg["method"] for msg in wire if "method" in msg]
    assert calls[:3] == ["initialize", "session/new", "session/prompt"]
    asks = [msg for msg in wire if msg.get("method") == "session/request_permission"]
    assert len(asks) == 1
    # Both sides number their own requests: acpx's answer is the one after the ask.
    after = wire[wire.index(asks[0]) + 1 :]
    choice = next(msg for msg in after if msg.get("id") == asks[0]["id"] and "result" in msg)
    assert choice["result"]["outcome"] == {"outcome": "selected", "optionId": "allow"}
    updates = [msg["params"]["update"] for msg in wire if msg.get("method") == "session/update"]
    statuses = [u.get("status") for u in updates if u["sessionUpdate"] == "tool_call_update"]
    assert statuses == ["in_progress", "completed"]
    prompt_id = next(msg["id"] for msg in wire if msg.get("method") == "session/prompt")
    answer = [m for m in wire if m.get("id") == prompt_id and "method" not in m][-1]
    assert answer["result"]["stopReason"] == "end_turn"
    # The fake agent's tools ran on the VM's side, through the daemon, with the answer.
    assert (d.work / OUTPUT_FILE).read_text() == FILE_CONTENT


async def test_claude_code_through_the_gateway_asks_the_client_and_runs_the_command(
    tmp_path: Path,
) -> None:
    require_real_agents()
    kit = KITS["claude"]
    marker = "ran-through-the-gateway-1618"

    async def client_side(method: str, params: Any) -> Any:
        assert method == "session/request_permission"
        return allow(params["options"])

    async with rig(tmp_path, kit) as r:
        command = f"echo {marker} > {r.work}/ran.txt && cat {r.work}/ran.txt"
        r.script.add(
            Reply(text="Running it now. ", tool=kit.shell(command)),
            Reply(text="The command ran."),
        )
        async with real_daemon(r, r.agents_file()) as d:
            args = ("--agent", kit.name, "--cwd", str(r.work))
            token = d.plane.viewer_token()
            async with gateway(tmp_path, d.url, token, *args, on_request=client_side) as client:
                await client.call("initialize", INIT)
                new = {"cwd": str(r.work), "mcpServers": []}
                sid = (await client.call("session/new", new, timeout=WAIT_S))["sessionId"]
                prompt = [{"type": "text", "text": "please run the command"}]
                answer = await client.call(
                    "session/prompt", {"sessionId": sid, "prompt": prompt}, timeout=WAIT_S
                )
                await client.close_stdin()
                assert await client.process.wait() == 0
    assert answer["stopReason"] == "end_turn", answer
    (asked,) = client.requests
    assert asked["params"]["sessionId"] == sid
    assert (r.work / "ran.txt").read_text() == f"{marker}\n"  # the agent ran it, on the VM
    assert marker in r.script.turns()[1].text  # its output went back to the model
    texts = [
        u["update"]["content"].get("text", "")
        for u in client.updates(sid)
        if u["update"]["sessionUpdate"] == "agent_message_chunk"
    ]
    assert "The command ran." in "".join(texts)
