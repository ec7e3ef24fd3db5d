"""`vm-agent serve` as a real subprocess: systemd readiness and watchdog, SIGTERM during a
prompt, no agent left behind, and a restart on the same state directory."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.daemon.harness import (
    Viewer,
    agent_gone,
    children,
    control_plane,
    notify_socket,
    serving,
    sigterm_and_wait,
)
from tests.token_files import write_token
from vm_agent.process.catalog import fake_agent_command
from vm_agent.process.procgroup import group_alive

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


async def check_health_and_metrics(url: str, secret: str, node_token: str) -> None:
    base = url.replace("ws://", "http://").removesuffix("/v1/ws")
    node = {"Authorization": f"Bearer {node_token}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        health = await http.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        status = await http.get("/status", headers=node)
        assert status.json()["node_id"] == "node-1"
        assert "control_plane" in status.json()
        metrics = await http.get("/metrics", headers=node)
        assert metrics.status_code == 200
        assert "vm_agent_sessions" in metrics.text
        assert (await http.get("/metrics")).status_code == 401
    assert secret not in health.text + status.text + metrics.text


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
            callback_token = plane.callback_token()
            write_token(tmp_path / "callback-token", callback_token)
            token = plane.viewer_token()

            # -- first daemon: a prompt is streaming when SIGTERM comes --------------------
            process, url = await serving(tmp_path, plane, notify, agents)
            await notify.wait_for("WATCHDOG=1")
            await notify.wait_for("WATCHDOG=1", start=len(notify.messages))  # more than one
            await check_health_and_metrics(url, callback_token, plane.node_token())
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
                # The daemon's shutdown cancelled the running prompt: one outcome, recorded.
                assert finished[0]["data"]["outcome"] == "cancelled"

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
                p2_started = await viewer.until(
                    lambda e: e["type"] == "prompt.started" and e["data"]["prompt_id"] == "p2"
                )
                # Streaming: the agent has the prompt (a cancel sent sooner may overtake it).
                await viewer.until(
                    lambda e: e["type"] == "acp.update" and e["seq"] > p2_started["seq"] + 1
                )
                await viewer.call("session/cancel", {"session_id": SESSION})
                outcome = await viewer.answer(p2)
                assert outcome["outcome"] == "cancelled"
            assert await sigterm_and_wait(process) == 0


async def test_second_signal_forces_the_exit(tmp_path: Path) -> None:
    # An agent whose group ignores SIGTERM and outlives its stdin: the clean stop has to
    # wait for the SIGKILL, and a second signal in that wait ends the daemon at once.
    stubborn = (
        "trap '' TERM; "
        + " ".join(f"'{arg}'" for arg in fake_agent_command("--scenario", "echo"))
        + "; sleep 600"
    )
    agents = tmp_path / "agents.toml"
    agents.write_text(f'[agents.stubborn]\ncommand = ["sh", "-c", {json.dumps(stubborn)}]\n')
    work = tmp_path / "work"
    work.mkdir()
    with tempfile.TemporaryDirectory(prefix="vmad-") as short:
        async with (
            control_plane(tmp_path / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(tmp_path / "callback-token", plane.callback_token())
            process, url = await serving(tmp_path, plane, notify, agents)
            async with Viewer.connect(url, plane.viewer_token()) as viewer:
                started = await viewer.call(
                    "session/start", {"agent": "stubborn", "cwd": str(work)}
                )
                assert started["state"] == "ready"
            (agent_pid,) = children(process.pid)
            process.send_signal(signal.SIGTERM)
            await notify.wait_for("STOPPING=1")
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(60):
                assert await process.wait() == 1
            assert "forcing the exit" in (tmp_path / "daemon.log").read_text()
            assert await agent_gone(agent_pid), f"agent group {agent_pid} still alive"
