"""`vm-agent dev` (a subprocess): a task submitted to its control plane is dispatched to its
daemon (the dev node) and reaches `completed` with the fake agent; its events read back.
The node lifecycle runs with the `dev` provider: it adopted the daemon as its node."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.streams.text import TextReceiveStream
from sqlalchemy import select

from control_plane.storage.db import make_engine, node_machines, sqlite_url
from tests.daemon.harness import base_env, vm_agent
from tests.processes import child_process, stopped_by

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]


async def _read_until(stream: TextReceiveStream, pattern: str, seen: list[str]) -> re.Match[str]:
    with anyio.fail_after(90):
        while not (found := re.search(pattern, "".join(seen))):
            seen.append(await stream.receive())
    return found


async def test_a_task_on_dev_s_control_plane_completes_on_its_daemon(tmp_path: Path) -> None:
    dev_dir = tmp_path / "dev"
    argv = vm_agent("dev", "--dev-dir", str(dev_dir), "--port", "0", "--control-plane-port", "0")
    # As root, dev runs agents as pool users (tests/containment covers that): here as root.
    env = {**base_env(), "VM_AGENT_WORKSPACE_ROOTS": str(tmp_path), "VM_AGENT_AGENTS_AS_ROOT": "1"}
    with (tmp_path / "dev.log").open("wb") as log:
        async with child_process(argv, env=env, stderr=log) as process:
            assert process.stdout is not None
            out: list[str] = []
            stream = TextReceiveStream(process.stdout)
            url = (await _read_until(stream, r"control plane: +(http://\S+)\n", out))[1]
            await _read_until(stream, r"viewer url: +\S+\n", out)
            cp = ["--state-dir", str(dev_dir / "control-plane"), "--public-url", url]

            async def mint(*what: str) -> dict[str, str]:
                argv = [sys.executable, "-m", "control_plane", *cp, "mint", *what]
                minted = await anyio.run_process(argv, env=base_env())
                return {"Authorization": f"Bearer {minted.stdout.decode().strip()}"}

            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                admin = await mint("admin", "root")
                with anyio.fail_after(60):  # placement takes the dev node once it reported
                    while (
                        not (await client.get("/api/nodes/dev-node", headers=admin))
                        .json()
                        .get("ready_at")
                    ):
                        await anyio.sleep(0.1)
                await run_a_task(client, await mint("user", "alice"))
            await adopted_by_the_lifecycle(dev_dir)
            assert await stopped_by(process, signal.SIGINT) == 0


async def run_a_task(client: httpx.AsyncClient, user: dict[str, str]) -> None:
    body = {"taskId": "t1", "agent": "fake", "prompt": "hello dev"}
    r = await client.post("/api/tasks", json=body, headers=user)
    assert r.status_code == 201, r.text
    assert r.json()["nodeId"] == "dev-node", r.json()["placementExplanation"]
    task: dict[str, Any] = {}
    ends = ("completed", "failed", "crashed", "timed_out", "auth_required", "cancelled")
    with anyio.move_on_after(60):
        while (task := (await client.get("/api/tasks/t1", headers=user)).json())[
            "status"
        ] not in ends:
            await anyio.sleep(0.1)
    assert task["status"] == "completed", task
    events: list[dict[str, Any]] = []
    with anyio.fail_after(30):
        while not any(e["type"] == "prompt.finished" for e in events):
            await anyio.sleep(0.1)
            events = (await client.get("/api/tasks/t1/events", headers=user)).json()["events"]
    text = "".join(
        e["data"]["update"]["content"].get("text", "") for e in events if e["type"] == "acp.update"
    )
    assert "hello dev" in text


async def adopted_by_the_lifecycle(dev_dir: Path) -> None:
    """The dev node's lifecycle row: the `dev` provider's, adopted (its provider id is the
    daemon's node id) and ready."""
    engine = make_engine(sqlite_url(dev_dir / "control-plane"))
    row: Any = None
    try:
        with anyio.fail_after(30):
            while True:
                with engine.connect() as conn:
                    row = (
                        conn.execute(
                            select(node_machines).where(node_machines.c.node_id == "dev-node")
                        )
                        .mappings()
                        .first()
                    )
                if row is not None and row["phase"] == "ready":
                    break
                await anyio.sleep(0.1)
    finally:
        engine.dispose()
    assert (row["provider"], row["provider_id"]) == ("dev", "dev-node"), row
