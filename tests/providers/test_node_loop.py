"""The node lifecycle loop against the Hetzner stand-in, on both databases: placement's ask
becomes one VM with our labels and user-data, a warm node is kept while it has work and
reaped after the window, a lost create is found by label instead of made twice, a 429
waits for its reset, a node that never reports is deleted, and orphans are swept."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select, update

from control_plane.dispatch.node_boot import BootKit
from control_plane.dispatch.nodes import NodeLifecycle, NodeSettings
from control_plane.identity.sealing import Sealer
from control_plane.providers.base import node_labels
from control_plane.providers.lifecycle import Step
from control_plane.providers.registry import HetznerSettings, default_drivers
from control_plane.provisioning.artifacts.manifest import Manifest, Wheelhouse
from control_plane.storage.db import node_machines, node_requests, nodes, workspaces
from tests.providers.hetzner_standin import StandIn, serving

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
TOKEN = "hz-platform-" + "k" * 40
PLANE = "cp-test"
MANIFEST = Manifest(
    wheelhouse=Wheelhouse(
        file="vm-agent-wheelhouse.tar", sha256="a" * 64, size=1, vm_agent_version="0.1.0"
    )
)
SETTINGS = NodeSettings(
    ready_deadline_s=600, warm_window_s=300, stale_after_s=120, lost_after_s=900,
    create_grace_s=60, lease_s=30, sweep_interval_s=1e9, backoff_first_s=5,
    agent_start_timeout_s=240,
)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def api() -> AsyncIterator[tuple[StandIn, str]]:
    standin = StandIn(token=TOKEN)
    async with serving(standin) as endpoint:
        yield standin, endpoint


def loop(engine: Engine, endpoint: str, clock: Callable[[], float], **kw: Any) -> NodeLifecycle:
    hetzner = HetznerSettings(
        token=SecretStr(TOKEN), endpoint=endpoint, timeout_s=kw.pop("timeout_s", 10)
    )
    kit = BootKit(
        public_url="https://cp.example.test",
        jwks_url="https://cp.example.test/.well-known/jwks.json",
        manifest=lambda: MANIFEST,
        ca_certificate=None,
        dns_name=lambda node: f"{node}.nodes.example.test",
        bootstrap_ttl_s=1800,
    )
    return NodeLifecycle(
        engine, Sealer(os.urandom(32)), kit, PLANE, default_drivers(hetzner),
        settings=kw.pop("settings", SETTINGS), hetzner=hetzner, clock=clock, **kw,
    )  # fmt: skip


def ask_for_node(
    engine: Engine, node_id: str, owner: str, now: float, provider: str = "hetzner"
) -> None:
    """What placement writes when no node fits: a workspace on a node it asks for."""
    with engine.begin() as conn:
        conn.execute(
            insert(workspaces).values(
                workspace_id=f"ws-{node_id}",
                task_id=f"t-{node_id}",
                owner=owner,
                node_id=node_id,
                state="active",
                provider=provider,
                requested_vm_size="small",
                vm_size_source="platform",
                requirements_json="{}",
                reservation_json="{}",
                reservation_provenance_json="{}",
                placement_explanation_json="{}",
                created_at=now,
            )
        )
        conn.execute(
            insert(node_requests).values(
                node_id=node_id,
                provider=provider,
                size="small",
                state="pending",
                workspace_id=f"ws-{node_id}",
                created_at=now,
            )
        )


def phase(engine: Engine, node_id: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                select(node_machines.c.phase).where(node_machines.c.node_id == node_id)
            ).scalar_one()
        )


def report(
    engine: Engine,
    node_id: str,
    now: float,
    states: list[str] | None = None,
    *,
    activity: dict[str, int] | None = None,
    drained: bool = False,
) -> None:
    """What the node's ready and heartbeats leave in `nodes` (callbacks.heartbeat)."""
    sessions = [
        {"session_id": f"s{i}", "state": s, "agent": "fake"} for i, s in enumerate(states or [])
    ]
    usage = {"activity": activity or {}, "drained": drained}
    with engine.begin() as conn:
        conn.execute(
            update(nodes)
            .where(nodes.c.node_id == node_id)
            .values(ready_at=now, last_heartbeat_at=now, sessions=sessions, usage=usage)
        )


def release(engine: Engine, node_id: str, now: float) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(workspaces)
            .where(workspaces.c.node_id == node_id)
            .values(state="released", released_at=now)
        )


async def test_ask_create_boot_ready_warm_reap(engine: Engine, api: tuple[StandIn, str]) -> None:
    standin, endpoint = api
    clock = Clock()
    nl = loop(engine, endpoint, clock)
    ask_for_node(engine, "n-1", "alice", clock.now)
    assert (await nl.pass_once())["n-1"].step is Step.CREATE
    (server,) = standin.live()
    assert server["labels"] == node_labels(PLANE, "n-1") and server["server_type"] == "cx22"
    assert server["user_data"].startswith("#cloud-config")
    assert TOKEN not in server["user_data"]  # the provider's credential never goes to the VM
    assert "VM_AGENT_START_TIMEOUT_S=240\n" in server["user_data"]  # the nodes' start bound
    assert phase(engine, "n-1") == "booting"
    clock.now += 30
    assert (await nl.pass_once())["n-1"].step is Step.WAIT
    report(engine, "n-1", clock.now)
    reported_at = clock.now
    clock.now += 5
    assert (await nl.pass_once())["n-1"].step is Step.MARK_READY
    with engine.connect() as conn:
        recorded = conn.execute(select(node_machines.c.ready_at)).scalar_one()
    assert recorded == reported_at  # the node's own time, not this pass's
    # a task on it, for longer than any warm window: kept
    for _ in range(4):
        clock.now += 400
        report(engine, "n-1", clock.now, ["prompting"])
        assert (await nl.pass_once())["n-1"].step is Step.WAIT
    release(engine, "n-1", clock.now)
    report(engine, "n-1", clock.now, ["ready"])
    clock.now += 100
    assert (await nl.pass_once())["n-1"].step is Step.WAIT  # warm: the next task may come
    clock.now += 250
    report(engine, "n-1", clock.now, ["ready"])
    assert (await nl.pass_once())["n-1"].step is Step.DRAIN
    with engine.connect() as conn:
        state = conn.execute(select(node_requests.c.state)).scalar_one()
    assert state == "retired"  # placement no longer puts tasks there
    # deleted only once the daemon says it is drained (it learns of the drain from the
    # answer to its next heartbeat), never before: a terminal opened meanwhile keeps it
    clock.now += 30
    report(engine, "n-1", clock.now, ["ready"], activity={"terminals": 1})
    assert (await nl.pass_once())["n-1"].step is Step.WAIT
    assert len(standin.live()) == 1
    clock.now += 30
    report(engine, "n-1", clock.now, ["ready"], drained=True)
    assert (await nl.pass_once())["n-1"].step is Step.DELETE
    assert standin.live() == []
    assert (await nl.pass_once())["n-1"].step is Step.FORGET
    assert phase(engine, "n-1") == "gone"
    assert await nl.pass_once() == {}  # nothing more to do
    assert [c.method for c in standin.calls].count("POST") == 1


async def test_a_lost_create_is_found_by_label_not_made_twice(
    engine: Engine, api: tuple[StandIn, str]
) -> None:
    standin, endpoint = api
    clock = Clock()
    ask_for_node(engine, "n-2", "alice", clock.now)
    standin.fail("POST", "/v1/servers", "no-answer")
    first = loop(engine, endpoint, clock, timeout_s=0.5, holder="replica-a")
    await first.pass_once()  # the create is applied, its answer never comes
    assert len(standin.live()) == 1 and phase(engine, "n-2") == "creating"
    # another replica (the first may have died mid-call) takes over
    second = loop(engine, endpoint, clock, holder="replica-b")
    clock.now += SETTINGS.backoff_first_s + 1  # past the backoff the lost answer set
    assert (await second.pass_once())["n-2"].step is Step.ADOPT
    assert phase(engine, "n-2") == "booting"
    clock.now += SETTINGS.create_grace_s * 3
    assert (await second.pass_once())["n-2"].step is Step.WAIT
    assert len(standin.live()) == 1  # one VM, owned by its row
    assert [c.method for c in standin.calls].count("POST") == 1


async def test_rate_limited_create_waits_for_the_reset(
    engine: Engine, api: tuple[StandIn, str]
) -> None:
    standin, endpoint = api
    clock = Clock()
    standin.now = time.time()  # RateLimit-Reset is wall-clock time, as the real API's
    ask_for_node(engine, "n-3", "alice", clock.now)
    standin.fail("POST", "/v1/servers", "429", 40)
    nl = loop(engine, endpoint, clock)
    await nl.pass_once()
    assert standin.live() == [] and phase(engine, "n-3") == "requested"
    clock.now += 30
    assert (await nl.pass_once())["n-3"].step is Step.WAIT  # before the reset
    clock.now += 11
    assert (await nl.pass_once())["n-3"].step is Step.CREATE
    assert len(standin.live()) == 1


async def test_a_node_that_never_reports_is_deleted(
    engine: Engine, api: tuple[StandIn, str]
) -> None:
    standin, endpoint = api
    clock = Clock()
    standin.stuck.add("vm-agent-n-4")
    ask_for_node(engine, "n-4", "alice", clock.now)
    nl = loop(engine, endpoint, clock)
    await nl.pass_once()
    clock.now += SETTINGS.ready_deadline_s + 1
    decision = (await nl.pass_once())["n-4"]
    assert decision.step is Step.DELETE and decision.replace_tasks
    assert standin.live() == []


async def test_the_sweep_deletes_vms_no_row_owns(engine: Engine, api: tuple[StandIn, str]) -> None:
    standin, endpoint = api
    clock = Clock()
    ask_for_node(engine, "n-5", "alice", clock.now)
    nl = loop(engine, endpoint, clock)
    await nl.pass_once()
    ours = nl.drivers("hetzner", TOKEN)
    assert ours is not None
    from control_plane.providers.base import VmSpec

    async def make(name: str, labels: dict[str, str]) -> None:
        spec = (VmSpec(name=name, size="small", region=None, image="debian-12",
                           user_data="", labels=labels))  # fmt: skip
        await anyio.to_thread.run_sync(ours.create, spec)

    await make("ghost", node_labels(PLANE, "n-ghost"))  # ours, but no row: a dead replica's
    await make("theirs", node_labels("cp-other", "n-x"))  # another control plane's: not ours
    deleted = await nl.sweep()
    assert len(deleted) == 1
    assert sorted(s["name"] for s in standin.live()) == ["theirs", "vm-agent-n-5"]


async def test_no_credentials_no_vm(engine: Engine, api: tuple[StandIn, str]) -> None:
    standin, endpoint = api
    clock = Clock()
    ask_for_node(engine, "n-6", "bob", clock.now)
    nl = loop(engine, endpoint, clock)
    nl.hetzner = HetznerSettings(token=None, endpoint=endpoint)
    assert (await nl.pass_once())["n-6"].step is Step.WAIT
    # kept as asked: a credential given later makes it; placement may still count on it
    assert standin.live() == [] and phase(engine, "n-6") == "requested"
    with engine.connect() as conn:
        reason = conn.execute(select(node_machines.c.reason)).scalar_one()
    assert "PUT /api/providers/hetzner/credentials" in str(reason)
    # bob brings his own: the next pass after the wait makes the VM with it
    from control_plane.providers import credentials

    credentials.store(engine, nl.sealer, "bob", "hetzner", TOKEN, now=clock.now)
    clock.now += SETTINGS.backoff_max_s + 1
    assert (await nl.pass_once())["n-6"].step is Step.CREATE
    assert len(standin.live()) == 1
