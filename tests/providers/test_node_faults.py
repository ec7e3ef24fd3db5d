"""Issue 22's faults: control-plane replicas (real processes, one PostgreSQL) share the
Hetzner stand-in (a process too); a task asks for a new node, and the first lifecycle
replica SIGKILLs itself at one provider step (dispatch/node_faults.py); two more, started
after it died and racing each other, finish the work. From what the stand-in was sent and
what it holds: exactly one VM per node ever made, none left without a row once the node
deadlines and the sweep have passed, one delete per VM (or a second that found it gone)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import select

from control_plane.plane import ControlPlane
from control_plane.providers.base import NODE_LABEL, node_labels
from control_plane.providers.registry import plane_id
from control_plane.provisioning.artifacts.manifest import Manifest, Wheelhouse
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import node_machines
from tests.dispatch.test_replica_faults import replica, wait_dead
from tests.postgres import fresh_schema, postgres_url

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

# https: a node's user-data names the control plane, and a VM accepts http on loopback only
PUBLIC_URL = "https://control-plane.test"
TOKEN = "hz-platform-" + "f" * 40
ORPHAN = "n-left-behind"  # a VM an earlier control plane left: only the sweep may take it
WAIT_S = 30.0
# Short deadlines: a node that never reports (the stand-in's VMs never boot a daemon) is
# deleted after 4 s, its task placed again once on a second node, which goes the same way.
NODES = {
    "nodes_pass_interval_s": 0.2,
    "nodes_lease_s": 2,
    "nodes_sweep_interval_s": 1,
    "nodes_ready_deadline_s": 4,
    "nodes_create_grace_s": 1,
    "nodes_delete_grace_s": 1,
    "nodes_backoff_first_s": 0.5,
    "nodes_backoff_max_s": 2,
}


@contextmanager
def minter(tmp_path: Path, database_url: str) -> Iterator[ControlPlane]:
    """This test process as one more control plane on the database (to mint tokens)."""
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "minter", public_url=PUBLIC_URL, database_url=database_url
    )
    plane = ControlPlane.open(settings)
    try:
        yield plane
    finally:
        plane.close()


@contextmanager
def standin_process() -> Iterator[str]:
    """The stand-in in a process of its own; yields its API endpoint (``.../v1``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.providers.standin_process", TOKEN],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:"), endpoint
        yield endpoint
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def stand_in_state(endpoint: str) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(endpoint.removesuffix("/v1") + "/_standin/state").json()
    return state


@pytest.mark.parametrize(
    "point",
    [
        "create_recorded",
        "create_sent",
        "delete_recorded",
        "delete_sent",
        "sweep_listed",
        "sweep_deleted",
    ],
)
async def test_a_replica_killed_at_a_provider_step_leaves_one_vm_per_node(
    tmp_path: Path, point: str
) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    manifest = Manifest(
        wheelhouse=Wheelhouse(
            file="vm-agent-wheelhouse.tar", sha256="a" * 64, size=1, vm_agent_version="0.1.0"
        )
    )
    (artifacts / "manifest.json").write_text(manifest.model_dump_json())
    with (
        standin_process() as endpoint,
        fresh_schema(postgres_url()) as db,
        minter(tmp_path, db) as plane,
    ):
        shared = {
            "public_url": PUBLIC_URL,
            "hetzner_token": TOKEN,
            "hetzner_endpoint": endpoint,
            "artifacts_dir": str(artifacts),
            **NODES,
        }
        httpx.post(
            endpoint.removesuffix("/v1") + "/_standin/servers",
            json={"name": "vm-agent-old", "labels": node_labels(plane_id(PUBLIC_URL), ORPHAN)},
        ).raise_for_status()
        user = {"Authorization": f"Bearer {plane.tokens.mint_user_token('alice')}"}
        with replica(
            tmp_path, "api", db, dispatch_enabled=False, nodes_enabled=False, **shared
        ) as api:
            async with httpx.AsyncClient(base_url=api.url, timeout=20) as client:
                body = {"taskId": "t1", "agent": "fake", "prompt": "on a new node"}
                r = await client.post("/api/tasks", json=body, headers=user)
                assert r.status_code == 201, r.text
                with replica(tmp_path, "first", db, nodes_kill_at=point, **shared) as first:
                    assert await wait_dead(first.proc, WAIT_S) == -signal.SIGKILL
                assert f"killed at {point}" in (tmp_path / "first.log").read_text()
                # two replicas race for what is left (leases: SKIP LOCKED)
                with (
                    replica(tmp_path, "second", db, **shared),
                    replica(tmp_path, "third", db, **shared),
                ):
                    await settled(client, user, plane, endpoint)
        check_one_vm_per_node(plane, stand_in_state(endpoint))


async def settled(
    client: httpx.AsyncClient, user: dict[str, str], plane: ControlPlane, endpoint: str
) -> None:
    """Until the task ended, every node row is gone and the stand-in holds no VM."""
    task: dict[str, Any] = {}
    live: list[Any] = []
    with anyio.move_on_after(WAIT_S):
        while True:
            task = (await client.get("/api/tasks/t1", headers=user)).json()
            state = await anyio.to_thread.run_sync(stand_in_state, endpoint)
            live = [s for s in state["servers"] if s["status"] != "deleted"]
            if task["timings"]["endedAt"] is not None and not live and not open_rows(plane):
                return
            await anyio.sleep(0.2)
    raise AssertionError(f"never settled: task {task}, VMs {live}, rows {open_rows(plane)}")


def rows(plane: ControlPlane) -> dict[str, str]:
    with plane.engine.connect() as conn:
        found = conn.execute(select(node_machines.c.node_id, node_machines.c.phase)).all()
    return {str(node): str(phase) for node, phase in found}


def open_rows(plane: ControlPlane) -> dict[str, str]:
    return {node: phase for node, phase in rows(plane).items() if phase != "gone"}


def check_one_vm_per_node(plane: ControlPlane, state: dict[str, Any]) -> None:
    calls, servers = state["calls"], state["servers"]
    owned = rows(plane)
    assert len(owned) == 2, owned  # the task's node, and the one it was placed on again
    creates = Counter(
        c["body"]["labels"][NODE_LABEL]
        for c in calls
        if c["method"] == "POST" and c["path"] == "/v1/servers"
    )
    assert creates == dict.fromkeys(owned, 1)  # one create sent per node, ever
    made = Counter(s["labels"][NODE_LABEL] for s in servers)
    assert made == {**dict.fromkeys(owned, 1), ORPHAN: 1}  # one VM per node (and the orphan)
    assert all(s["status"] == "deleted" for s in servers), servers  # none left
    deletes = Counter(c["path"] for c in calls if c["method"] == "DELETE")
    for server in servers:
        # one delete; a second one (a killed replica's, sent again) found it gone (404)
        assert deletes[f"/v1/servers/{server['id']}"] in (1, 2), (server, deletes)
    assert sum(deletes.values()) <= len(servers) + 1  # at most the one step cut short
