"""A published ACP client no one here wrote (`acpx`, pinned in agents/) runs `vm-agent acp`
as its agent, against `vm-agent serve` on loopback with the fake agent; and the real Claude
Code agent behind the gateway, against the scripted model.

acpx and the gateway it starts run in a network namespace where only loopback exists (an
npm program reaches nothing past this machine); the gateway reaches the daemon through a
forward from the namespace's loopback to a Unix socket that the test pipes to the daemon
(and can cut). acpx prints the ACP traffic both ways with `--format json`: the tests read
what the client was told from there. acpx hides the updates a `session/load` replays (its
own choice); `tests/gateway/test_resume.py` shows the replay with a client of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from tests.capabilities import missing
from tests.daemon.harness import Viewer
from tests.gateway.harness import INIT, Daemon, allow, daemon, gateway
from tests.processes import command_line, with_variable
from tests.real_agents.agents import BIN, JAIL, KITS, SYSTEM_PATH, require_real_agents
from tests.real_agents.harness import WAIT_S, rig
from tests.real_agents.harness import daemon as real_daemon
from tests.real_agents.model_api import Reply
from tests.relays import CuttingRelay
from vm_agent.fake_agent.tools import FILE_CONTENT, OUTPUT_FILE

pytestmark = [pytest.mark.real_agents, pytest.mark.anyio, pytest.mark.timeout(600)]

ACPX = BIN / "acpx"
# The daemon's port as the gateway sees it, on the namespace's own loopback.
DAEMON_PORT = 18766


@pytest.fixture(autouse=True)
def _acpx() -> None:
    reason = None
    if not ACPX.exists() or not (BIN / "node").exists():
        reason = f"{ACPX} is missing (run `cd agents && npm ci`)"
    elif shutil.which("unshare") is None:
        reason = "unshare (util-linux) is missing"
    if reason is not None:
        missing(reason)  # a CI run that cannot run it fails rather than skips


class DaemonPipe(CuttingRelay):
    """A Unix socket piped to the daemon's TCP port (the gateway's side, through the
    namespace's forward); ``cut`` is a network failure between the gateway and the VM."""

    def __init__(self, path: Path, port: int) -> None:
        super().__init__(port)
        self.path = path

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_unix_listener(self.path)
        task_status.started()
        await self.relay(listener)


@dataclass
class Run:
    code: int
    wire: list[dict[str, Any]]  # with `--format json`: the ACP traffic, both ways
    out: str
    err: str


@dataclass
class Acpx:
    """acpx with the gateway as its agent, both in a loopback-only namespace."""

    d: Daemon
    pipe: DaemonPipe
    agent: str
    home: Path

    async def run(
        self, *args: str, on_line: Callable[[list[dict[str, Any]]], None] | None = None
    ) -> Run:
        gateway = [
            sys.executable, "-m", "vm_agent", "acp",
            "--url", f"ws://127.0.0.1:{DAEMON_PORT}/v1/ws",
            "--agent", self.agent, "--cwd", str(self.d.work),
        ]  # fmt: skip
        argv = [
            shutil.which("unshare") or "unshare", "--net", "--map-root-user", "--",
            sys.executable, str(JAIL), "--forward", f"{DAEMON_PORT}={self.pipe.path}", "--",
            str(ACPX), "--agent", " ".join(gateway), "--cwd", str(self.d.work), *args,
        ]  # fmt: skip
        env = {
            "PATH": f"{BIN}:{SYSTEM_PATH}",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "VM_AGENT_TOKEN": self.d.plane.viewer_token(),
        }
        wire: list[dict[str, Any]] = []
        out = b""
        with tempfile.TemporaryFile() as err:
            # Its own process group: the namespace's forwarder (a child of the jail) goes
            # with it when the group is stopped.
            process = await anyio.open_process(
                argv, env=env, cwd=self.d.work, stderr=err, start_new_session=True
            )
            assert process.stdout is not None
            with anyio.fail_after(300):
                buffer = b""
                async for chunk in process.stdout:
                    out += chunk
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    wire += [json.loads(line) for line in lines if line.startswith(b"{")]
                    if on_line is not None:
                        on_line(wire)
                code = await process.wait()
            await self._all_gone(process.pid)
            err.seek(0)
            return Run(code, wire, out.decode(), err.read().decode(errors="replace"))

    async def _all_gone(self, pgid: int) -> None:
        """Stops what is left of the run (the forwarder) and waits for acpx's own helpers
        (a persistent session's queue owner and its gateway leave after their TTL)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with anyio.move_on_after(60):
            while with_variable("HOME", str(self.home)):
                await anyio.sleep(0.1)
        left = {pid: command_line(pid) for pid in with_variable("HOME", str(self.home))}
        assert left == {}, f"processes of acpx left: {left}"


@asynccontextmanager
async def acpx(tmp_path: Path, agent: str, *flags: str) -> AsyncIterator[Acpx]:
    """The daemon with one fake agent, and acpx ready to run the gateway for it."""
    async with (
        daemon(tmp_path, {agent: flags}) as d,
        anyio.create_task_group() as tg,
    ):
        with tempfile.TemporaryDirectory(prefix="vmgw-") as short:
            pipe = DaemonPipe(Path(short) / "daemon.sock", int(d.url.split(":")[2].split("/")[0]))
            await tg.start(pipe.serve)
            home = tmp_path / "home"
            home.mkdir()
            yield Acpx(d, pipe, agent, home)
            tg.cancel_scope.cancel()


def _updates(wire: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["params"]["update"] for m in wire if m.get("method") == "session/update"]


def _answer(wire: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """The gateway's answer to acpx's last request of ``method`` (both sides number their
    own requests: the answer is the first message after it with its id and no method)."""
    asked = [i for i, m in enumerate(wire) if m.get("method") == method and "id" in m][-1]
    msg_id = wire[asked]["id"]
    return next(m for m in wire[asked + 1 :] if m.get("id") == msg_id and "method" not in m)


def _text(wire: list[dict[str, Any]]) -> str:
    return "".join(
        u["content"].get("text", "")
        for u in _updates(wire)
        if u["sessionUpdate"] == "agent_message_chunk"
    )


async def test_acpx_runs_the_gateway_for_a_prompt_with_tool_calls(tmp_path: Path) -> None:
    async with acpx(tmp_path, "tools", "--scenario", "tools") as a:
        run = await a.run("--approve-all", "--format", "json", "exec", "write it")
        assert run.code == 0, run.err
        wire = run.wire
        calls = [msg["method"] for msg in wire if "method" in msg]
        assert calls[:3] == ["initialize", "session/new", "session/prompt"]
        asks = [msg for msg in wire if msg.get("method") == "session/request_permission"]
        assert len(asks) == 1
        after = wire[wire.index(asks[0]) + 1 :]
        choice = next(msg for msg in after if msg.get("id") == asks[0]["id"] and "result" in msg)
        assert choice["result"]["outcome"] == {"outcome": "selected", "optionId": "allow"}
        updates = _updates(wire)
        statuses = [u.get("status") for u in updates if u["sessionUpdate"] == "tool_call_update"]
        assert statuses == ["in_progress", "completed"]
        assert _answer(wire, "session/prompt")["result"]["stopReason"] == "end_turn"
        # The fake agent's tools ran on the VM's side, through the daemon.
        assert (a.d.work / OUTPUT_FILE).read_text() == FILE_CONTENT


async def test_acpx_prompt_completes_after_the_daemon_recovers_a_crash(tmp_path: Path) -> None:
    state = tmp_path / "agent-state"
    flags = ("--scenario", "crash-mid-prompt", "--once", "--state-dir", str(state))
    async with acpx(tmp_path, "crashy", *flags, "--chunks", "4") as a:
        run = await a.run("--format", "json", "exec", "abcdefgh")
        assert run.code == 0, run.err
        wire = run.wire
        answer = _answer(wire, "session/prompt")["result"]
        assert answer["stopReason"] == "end_turn"
        assert answer["_meta"]["vm-agent"]["outcome"] == "recovered"
        assert _text(wire) == "abcd"  # what the agent said before it died, once


async def test_acpx_sees_every_update_once_across_a_cut_connection(tmp_path: Path) -> None:
    flags = ("--scenario", "slow", "--chunks", "30", "--delay-ms", "30")
    async with acpx(tmp_path, "slow", *flags) as a:
        text = "".join(f"<{i:02d}>" for i in range(30))
        cut = False

        def cut_after_three(wire: list[dict[str, Any]]) -> None:
            nonlocal cut
            if not cut and len(_updates(wire)) >= 3:
                a.pipe.cut()
                cut = True

        run = await a.run("--format", "json", "exec", text, on_line=cut_after_three)
        assert run.code == 0, run.err
        wire = run.wire
        assert cut and a.pipe.connections >= 2
        assert _answer(wire, "session/prompt")["result"]["stopReason"] == "end_turn"
        assert [u["content"]["text"] for u in _updates(wire)] == [
            text[i : i + 4] for i in range(0, len(text), 4)
        ]


async def test_acpx_persistent_sessions_load_the_session_and_list_it(tmp_path: Path) -> None:
    async with acpx(tmp_path, "echo", "--scenario", "echo") as a:
        created = await a.run("sessions", "new")
        assert created.code == 0, created.err
        session_id = created.out.strip()
        # Each prompt of a saved session starts the gateway anew, which loads the session.
        for text in ("first question", "second question"):
            run = await a.run("--ttl", "1", "--format", "json", text)
            assert run.code == 0, run.err
            (load,) = [m for m in run.wire if m.get("method") == "session/load"]
            assert load["params"]["sessionId"] == session_id
            assert _answer(run.wire, "session/load")["result"] == {}
            assert _answer(run.wire, "session/prompt")["result"]["stopReason"] == "end_turn"
            assert _text(run.wire) == text
        listed = await a.run("sessions", "list")
        assert listed.code == 0, listed.err
        assert session_id in listed.out and "echo (ready)" in listed.out


async def test_acpx_sets_the_remote_agent_s_mode_and_config_option(tmp_path: Path) -> None:
    async with acpx(tmp_path, "modes", "--scenario", "echo", "--modes") as a:
        created = await a.run("sessions", "new")
        assert created.code == 0, created.err
        session_id = created.out.strip()
        # acpx prints what it did (not the wire) for these commands.
        run = await a.run("--ttl", "1", "--format", "json", "set-mode", "code")
        assert run.code == 0, run.err
        assert json.loads(run.out)["modeId"] == "code"
        run = await a.run("--ttl", "1", "--format", "json", "set", "model", "smart")
        assert run.code == 0, run.err
        # A mode the agent does not offer: its own error, as acpx was told it.
        run = await a.run("--ttl", "1", "--format", "json", "set-mode", "nope")
        assert run.code != 0
        error = json.loads(run.out)["error"]
        assert (error["code"], error["message"]) == (-32602, "Invalid params: no mode 'nope'")
        # The remote agent took both changes, recorded in the session's log with who.
        async with Viewer.connect(a.d.url, a.d.plane.viewer_token()) as viewer:
            settings = await viewer.call("session/settings", {"session_id": session_id})
            assert settings["modes"]["currentModeId"] == "code"
            assert settings["configOptions"][0]["currentValue"] == "smart"
            await viewer.call("session/subscribe", {"session_id": session_id})
            await viewer.until(lambda e: e["data"].get("method") == "session/set_config_option")
            changed = [e["data"] for e in viewer.events if e["type"] == "agent.settings_changed"]
            assert [c["params"] for c in changed] == [
                {"modeId": "code"},
                {"configId": "model", "value": "smart"},
            ]  # the refused one is not recorded
        # The gateway that loads the session for the next prompt tells acpx the modes.
        run = await a.run("--ttl", "1", "--format", "json", "after the changes")
        assert run.code == 0, run.err
        assert _answer(run.wire, "session/load")["result"]["modes"]["currentModeId"] == "code"
        assert _text(run.wire) == "after the changes"


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
