"""`vm-agent serve` as a real subprocess: systemd readiness and watchdog, SIGTERM during a
prompt, no agent left behind, and a restart on the same state directory."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from tests.daemon.harness import (
    Notify,
    Plane,
    Viewer,
    children,
    control_plane,
    daemon_env,
    notify_socket,
    start_process,
    vm_agent,
    write_token,
)
from vm_agent.catalog import fake_agent_command
from vm_agent.procgroup import group_alive

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

SESSION = "s-term"


def write_agents(tmp: Path) -> Path:
    # Long enough to still be streaming when SIGTERM comes; transcripts kept for session/load.
    command = fake_agent_command(
        "--scenario", "slow", "--chunks", "100", "--delay-ms", "100",
        "--state-dir", str(tmp / "agent-state"),
    )  # fmt: skip
    path = tmp / "agents.toml"
    quoted = ", ".join(f'"{arg}"' for arg in command)
    path.write_text(f"[agents.fake-slow]\ncommand = [{quoted}]\n")
    return path


async def serving(
    tmp: Path, plane: Plane, notify: Notify, agents: Path
) -> tuple[anyio.abc.Process, str]:
    start = len(notify.messages)
    env = daemon_env(
        tmp,
        plane,
        VM_AGENT_AGENTS_FILE=str(agents),
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC="200000",
    )
    process = await start_process(vm_agent("serve"), env, tmp / "daemon.log")
    await notify.wait_for("READY=1", start=start)
    port = (await notify.wait_for(r"STATUS=serving on [^ ]+:(\d+);.*", start=start))[1]
    return process, f"ws://127.0.0.1:{port}/v1/ws"


async def sigterm_and_wait(process: anyio.abc.Process) -> int:
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(60):
        return await process.wait()


async def agent_gone(pgid: int) -> bool:
    # The daemon waits for the group itself; a short grace covers /proc catching up.
    with anyio.move_on_after(5):
        while group_alive(pgid):
            await anyio.sleep(0.05)
    return not group_alive(pgid)


async def test_sigterm_during_prompt_then_restart_recovers(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    agents = write_agents(tmp_path)
    # AF_UNIX paths are short (108 bytes): the socket lives in a short temp dir.
    with tempfile.TemporaryDirectory(prefix="vmad-") as short:
        async with (
            control_plane(tmp_path / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(tmp_path / "callback-token", plane.callback_token())
            token = plane.viewer_token()

            # -- first daemon: a prompt is streaming when SIGTERM comes --------------------
            process, url = await serving(tmp_path, plane, notify, agents)
            await notify.wait_for("WATCHDOG=1")
            await notify.wait_for("WATCHDOG=1", start=len(notify.messages))  # more than one
            async with Viewer.connect(url, token) as viewer:
                started = await viewer.call(
                    "session/start", {"agent": "fake-slow", "cwd": str(work), "session_id": SESSION}
                )
                assert started["state"] == "ready"
                await viewer.call("session/subscribe", {"session_id": SESSION, "after_seq": 0})
                await viewer.send(
                    "session/prompt",
                    {
                        "session_id": SESSION,
                        "prompt_id": "p1",
                        "prompt": [{"type": "text", "text": "hello slowly"}],
                    },
                )
                await viewer.until(lambda e: e["type"] == "acp.update")
                agent_pids = children(process.pid)
                assert len(agent_pids) == 1, agent_pids
                (agent_pid,) = agent_pids
                assert group_alive(agent_pid)  # its own process group: pgid == pid

                process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await viewer.receive_one()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
                seen = list(viewer.events)
            with anyio.fail_after(60):
                assert await process.wait() == 0
            assert notify.count("STOPPING=1") == 1
            assert await agent_gone(agent_pid), f"agent group {agent_pid} still alive"
            assert not children(process.pid)

            # -- second daemon on the same state dir ---------------------------------------
            process, url = await serving(tmp_path, plane, notify, agents)
            async with Viewer.connect(url, token) as viewer:
                listed = await viewer.call("session/list", {})
                (record,) = [s for s in listed["sessions"] if s["session_id"] == SESSION]
                assert record["state"] == "stopped"
                head = (await viewer.call("session/subscribe", {"session_id": SESSION}))["head_seq"]
                await viewer.until(lambda e: e["seq"] == head)
                replay = viewer.events
                assert [e["seq"] for e in replay] == list(range(1, head + 1))
                by_seq = {e["seq"]: e for e in replay}
                assert all(by_seq[e["seq"]] == e for e in seen), "replay differs from live"
                finished = [e for e in replay if e["type"] == "prompt.finished"]
                assert [e["data"]["prompt_id"] for e in finished] == ["p1"]
                # The stop came from the daemon's shutdown: the prompt got exactly one outcome.
                assert finished[0]["data"]["outcome"] in ("cancelled", "crashed")

                recovered = await viewer.call("session/recover", {"session_id": SESSION})
                assert recovered["state"] == "ready"
                assert recovered["acp_session_id"] == started["acp_session_id"]
                p2 = await viewer.send(
                    "session/prompt",
                    {
                        "session_id": SESSION,
                        "prompt_id": "p2",
                        "prompt": [{"type": "text", "text": "again"}],
                    },
                )
                await viewer.until(
                    lambda e: e["type"] == "prompt.started" and e["data"]["prompt_id"] == "p2"
                )
                await viewer.call("session/cancel", {"session_id": SESSION})
                outcome = await viewer.answer(p2)
                assert outcome["outcome"] == "cancelled"
            assert await sigterm_and_wait(process) == 0
