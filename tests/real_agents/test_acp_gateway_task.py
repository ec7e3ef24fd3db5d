"""acpx (pinned in agents/) runs `vm-agent acp --control-plane URL --task ID` as its agent:
the gateway asks the control plane where the task's session is and acpx's prompt runs in
that session on the daemon. acpx and the gateway run in a loopback-only network namespace
(as in test_acp_gateway.py), reaching the control plane and the daemon through forwards at
the same port numbers, so the viewer URL the control plane answers works there too."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.dispatch.harness import Stack, stack
from tests.real_agents.agents import BIN, JAIL, SYSTEM_PATH
from tests.real_agents.test_acp_gateway import ACPX, DaemonPipe, _acpx

pytestmark = [pytest.mark.real_agents, pytest.mark.anyio, pytest.mark.timeout(600)]

__all__ = ["_acpx"]  # its autouse fixture: acpx and unshare must be there


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


async def _run_acpx(tmp: Path, s: Stack, short: Path, task: str, user: str) -> tuple[int, str]:
    cp_port, daemon_port = _port(s.url), _port(s.viewer_url)
    gateway = [
        sys.executable, "-m", "vm_agent", "acp",
        "--control-plane", f"http://127.0.0.1:{cp_port}", "--task", task,
    ]  # fmt: skip
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    argv = [
        shutil.which("unshare") or "unshare", "--net", "--map-root-user", "--",
        sys.executable, str(JAIL),
        "--forward", f"{cp_port}={short / 'cp.sock'}",
        "--forward", f"{daemon_port}={short / 'daemon.sock'}", "--",
        str(ACPX), "--agent", " ".join(gateway), "--cwd", str(work),
        "--format", "json", "exec", "through acpx",
    ]  # fmt: skip
    home = tmp / f"home-{user}"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": f"{BIN}:{SYSTEM_PATH}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "VM_AGENT_USER_TOKEN": s.plane.tokens.mint_user_token(user),
    }
    with anyio.fail_after(300):
        # a group of its own, as the jail wants: its forwarder lives while the group does
        done = await anyio.run_process(argv, env=env, cwd=work, check=False, start_new_session=True)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def test_acpx_prompts_a_task_s_session_found_through_the_control_plane(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path) as s, anyio.create_task_group() as tg:
        await s.submit(taskId="t1", agent="fake", prompt="first", followUps=True)
        task = await s.until("t1", "awaiting_follow_up", "completed", "failed", "crashed")
        assert task["status"] == "awaiting_follow_up", task
        with tempfile.TemporaryDirectory(prefix="vmgt-") as short_dir:
            short = Path(short_dir)
            for name, url in (("cp.sock", s.url), ("daemon.sock", s.viewer_url)):
                await tg.start(DaemonPipe(short / name, _port(url)).serve)
            code, out = await _run_acpx(tmp_path, s, short, "t1", "alice")
            assert code == 0, out
            wire: list[dict[str, Any]] = [
                json.loads(line) for line in out.splitlines() if line.startswith("{")
            ]
            new = next(m for m in wire if m.get("result", {}).get("sessionId"))
            assert new["result"]["sessionId"] == task["sessionId"]  # the task's own session
            said = "".join(
                m["params"]["update"]["content"].get("text", "")
                for m in wire
                if m.get("method") == "session/update"
                and m["params"]["update"]["sessionUpdate"] == "agent_message_chunk"
            )
            assert said == "through acpx"
            # bob's acpx gets nothing of alice's task: the gateway exits with the reason.
            code, out = await _run_acpx(tmp_path, s, short, "t1", "bob")
            assert code != 0
            assert "through acpx" not in out
            # acpx shows why its agent failed to start, as the gateway said it on stderr.
            assert (
                "vm-agent acp: task t1: the control plane refused (HTTP 404): no such task" in out
            )
        tg.cancel_scope.cancel()
