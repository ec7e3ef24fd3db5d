"""`vm-agent attach` resumes from its last seq when the connection drops mid-prompt.

The connection runs through a TCP proxy of the test that can cut every live connection
(an abrupt drop, no close frame), like a network failure between a viewer and the VM.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, TaskStatus
from anyio.streams.text import TextReceiveStream

from tests.daemon.harness import (
    base_env,
    control_plane,
    notify_socket,
    serving,
    sigterm_and_wait,
    vm_agent,
)
from tests.relays import CuttingRelay
from tests.token_files import write_token
from vm_agent.process.catalog import fake_agent_command

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]


class CuttingProxy(CuttingRelay):
    """On a TCP port of loopback (the viewer's side)."""

    async def serve(self, *, task_status: TaskStatus[int]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        task_status.started(listener.extra(SocketAttribute.local_port))
        await self.relay(listener)


async def test_attach_resumes_after_a_dropped_connection(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    command = fake_agent_command("--scenario", "slow", "--chunks", "40", "--delay-ms", "100")
    agents = tmp_path / "agents.toml"
    agents.write_text(f"[agents.slow]\ncommand = {json.dumps(list(command))}\n")
    with tempfile.TemporaryDirectory(prefix="vmad-") as short:
        async with (
            control_plane(tmp_path / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
            anyio.create_task_group() as tg,
        ):
            write_token(tmp_path / "callback-token", plane.callback_token())
            daemon, url = await serving(tmp_path, plane, notify, agents)
            port = int(url.split(":")[2].split("/")[0])
            proxy = CuttingProxy(port)
            proxy_port = await tg.start(proxy.serve)
            argv = vm_agent(
                "attach", "--url", f"ws://127.0.0.1:{proxy_port}/v1/ws",
                "--token", plane.viewer_token(), "--start", "slow", "--cwd", str(work),
                "--prompt", "hello there", "--json",
            )  # fmt: skip
            with (tmp_path / "attach.err").open("wb") as err:
                attach = await anyio.open_process(argv, env=base_env(), stderr=err)
            assert attach.stdout is not None
            lines: list[dict[str, Any]] = []
            buffer = ""
            cut = False
            with anyio.fail_after(120):
                async for text in TextReceiveStream(attach.stdout):
                    buffer += text
                    *complete, buffer = buffer.split("\n")
                    lines += [json.loads(line) for line in complete if line]
                    updates = [x for x in lines if x.get("type") == "acp.update"]
                    if not cut and len(updates) >= 3:
                        proxy.cut()
                        cut = True
                assert await attach.wait() == 0, (tmp_path / "attach.err").read_text()
            assert cut
            assert proxy.connections >= 2
            assert "reconnecting" in (tmp_path / "attach.err").read_text()
            events, outcome = lines[:-1], lines[-1]
            assert outcome["outcome"] == "completed"
            # Every event once, in order, across the reconnect.
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            started = [e for e in events if e["type"] == "prompt.started"]
            finished = [e for e in events if e["type"] == "prompt.finished"]
            assert len(started) == 1 and len(finished) == 1  # the prompt ran once
            assert await sigterm_and_wait(daemon) == 0
            tg.cancel_scope.cancel()


async def test_attach_starts_a_session_under_the_id_it_is_given(tmp_path: Path) -> None:
    # The id the control plane made for the session: its agent's credentials come only then.
    work = tmp_path / "work"
    work.mkdir()
    agents = tmp_path / "agents.toml"
    command = fake_agent_command("--scenario", "echo")
    agents.write_text(f"[agents.echo]\ncommand = {json.dumps(list(command))}\n")
    with tempfile.TemporaryDirectory(prefix="vmad-") as short:
        async with (
            control_plane(tmp_path / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(tmp_path / "callback-token", plane.callback_token())
            daemon, url = await serving(tmp_path, plane, notify, agents)
            argv = vm_agent(
                "attach", "--url", url, "--token", plane.viewer_token(),
                "--start", "echo", "--session-id", "s-made-by-the-plane", "--cwd", str(work),
                "--prompt", "hello", "--json",
            )  # fmt: skip
            with anyio.fail_after(120):
                done = await anyio.run_process(argv, env=base_env(), check=False)
            assert done.returncode == 0, done.stderr.decode()
            lines = [json.loads(line) for line in done.stdout.decode().splitlines() if line]
            events, outcome = lines[:-1], lines[-1]
            assert outcome["outcome"] == "completed"
            assert outcome["session_id"] == "s-made-by-the-plane"
            assert {e["session_id"] for e in events} == {"s-made-by-the-plane"}
            assert await sigterm_and_wait(daemon) == 0


def test_a_session_id_without_start_is_a_usage_error(tmp_path: Path) -> None:
    import subprocess

    url = "ws://127.0.0.1:9/v1/ws"
    argv = vm_agent("attach", "--url", url, "--token", "t", "--session-id", "x")
    done = subprocess.run(argv, env=base_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "--session-id goes with --start" in done.stderr
