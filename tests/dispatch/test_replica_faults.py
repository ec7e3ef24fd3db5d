"""Two dispatching control-plane processes on PostgreSQL, the first SIGKILLed at each step
of a task (claimed, session started, prompt sent, outcome seen), the second started after:
the task ends once, with one session and one prompt on the node. A third replica (dispatch
off) takes the node's callbacks and the user's calls, as replicas behind one address do."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import select

from control_plane.dispatch.addresses import record_address
from control_plane.plane import ControlPlane
from control_plane.storage.db import node_events, task_transitions, tasks
from control_plane.storage.node_store import get_node
from tests.control_plane.test_main import free_port
from tests.control_plane.test_replicas import PUBLIC_URL, _env, minter
from tests.daemon.harness import NODE, Plane, Viewer, notify_socket, serving, stopped_at_exit
from tests.dispatch.harness import AGENTS, write_agents
from tests.postgres import fresh_schema, postgres_url
from tests.token_files import write_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

FAST = {
    "dispatch_pass_interval_s": 0.05,
    "dispatch_lease_s": 2,
    "dispatch_resend_after_s": 1,
    "heartbeat_interval_s": 1,
}
WAIT_S = 60.0


@contextmanager
def replica(tmp_path: Path, name: str, db: str, **settings: object) -> Iterator[Replica]:
    """`python -m control_plane serve` on the shared database (its process: `.proc`)."""
    port = free_port()
    argv = [sys.executable, "-m", "control_plane", "--state-dir", str(tmp_path / name)]
    with (tmp_path / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(
            [*argv, "serve", "--port", str(port)],
            env=_env(db, **{**FAST, **settings}),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, (line, (tmp_path / f"{name}.log").read_text()[-2000:])
        yield Replica(f"http://127.0.0.1:{port}", proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Replica:
    url: str
    proc: subprocess.Popen[str]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=20)


async def wait_dead(proc: subprocess.Popen[str], within_s: float = WAIT_S) -> int:
    with anyio.fail_after(within_s):
        while proc.poll() is None:
            await anyio.sleep(0.05)
    return proc.returncode


@pytest.mark.parametrize("point", ["claimed", "session_started", "prompt_sent", "outcome_seen"])
async def test_a_replica_killed_mid_step_leaves_the_task_to_another_once(
    tmp_path: Path, point: str
) -> None:
    with (
        fresh_schema(postgres_url()) as db,
        minter(tmp_path, db) as plane,
        replica(tmp_path, "api", db, dispatch_enabled=False) as api,
    ):
        await run_with_a_crash(tmp_path, db, plane, api, point)


async def run_with_a_crash(
    tmp_path: Path, db: str, plane: ControlPlane, api: Replica, point: str
) -> None:
    agents = write_agents(tmp_path / "agents.toml", tmp_path / "agent-state", fake=AGENTS["fake"])
    write_token(tmp_path / "callback-token", plane.tokens.mint_callback_token(NODE))
    user = {"Authorization": f"Bearer {plane.tokens.mint_user_token('alice')}"}
    with tempfile.TemporaryDirectory(prefix="vmad-") as short:
        async with notify_socket(Path(short) / "notify") as notify:
            process, viewer_url = await serving(
                tmp_path, Plane(api.url, plane), notify, agents, VM_AGENT_JWT_ISSUER=PUBLIC_URL
            )
            async with stopped_at_exit(process), api.client() as client:
                record_address(plane.engine, NODE, viewer_url, str(tmp_path), time.time())
                with anyio.fail_after(WAIT_S):  # placement takes a node that reported
                    while not (get_node(plane.engine, NODE) or {}).get("ready_at"):
                        await anyio.sleep(0.05)
                body = {"taskId": "t1", "agent": "fake", "prompt": "once only"}
                r = await client.post("/api/tasks", json=body, headers=user)
                assert r.status_code == 201, r.text
                with replica(tmp_path, "first", db, dispatch_kill_at=point) as first:
                    assert await wait_dead(first.proc) == -signal.SIGKILL
                assert f"killed at {point}" in (tmp_path / "first.log").read_text()
                with replica(tmp_path, "second", db):
                    done = await until_stopped(client, user, plane)
                assert done["status"] == "completed", done
                session_id = done["sessionId"]
                await outbox_delivered(plane, session_id)
                check_once(plane, session_id)
                async with Viewer.connect(viewer_url, node_token(plane)) as viewer:
                    listed = await viewer.call("session/list", {})
                sessions = [(s["session_id"], s["state"]) for s in listed["sessions"]]
                assert sessions == [(session_id, "stopped")]


def node_token(plane: ControlPlane) -> str:
    return plane.tokens.mint_viewer_token(NODE, ["node"], subject="control-plane")


async def until_stopped(
    client: httpx.AsyncClient, user: dict[str, str], plane: ControlPlane
) -> dict[str, Any]:
    """The task once it ended and its session was stopped on the node."""
    task: dict[str, Any] = {}
    with anyio.move_on_after(WAIT_S):
        while True:
            task = (await client.get("/api/tasks/t1", headers=user)).json()
            with plane.engine.connect() as conn:
                stopped = conn.execute(
                    select(tasks.c.session_stopped_at).where(tasks.c.client_task_id == "t1")
                ).scalar_one()
            if task["timings"]["endedAt"] is not None and stopped is not None:
                return task
            await anyio.sleep(0.1)
    raise AssertionError(f"the task did not end and stop its session: {task}")


async def outbox_delivered(plane: ControlPlane, session_id: str) -> None:
    with anyio.fail_after(WAIT_S):
        while not _events(plane, session_id, "prompt.finished"):
            await anyio.sleep(0.05)


def _events(plane: ControlPlane, session_id: str, kind: str) -> list[Any]:
    with plane.engine.connect() as conn:
        return list(
            conn.execute(
                select(node_events.c.seq).where(
                    node_events.c.session_id == session_id, node_events.c.type == kind
                )
            ).scalars()
        )


def check_once(plane: ControlPlane, session_id: str) -> None:
    with plane.engine.connect() as conn:
        ends = list(
            conn.execute(
                select(task_transitions.c.status)
                .join(tasks, tasks.c.task_id == task_transitions.c.task_id)
                .where(tasks.c.client_task_id == "t1", task_transitions.c.status == "completed")
            ).scalars()
        )
    assert ends == ["completed"]  # ended once
    assert len(_events(plane, session_id, "prompt.started")) == 1  # one prompt on the node
    assert len(_events(plane, session_id, "prompt.finished")) == 1
