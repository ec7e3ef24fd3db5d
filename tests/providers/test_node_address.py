"""Where the dispatcher reaches a node the lifecycle made: what its provider said, recorded
at create (and at adopt), so a task placed on it needs no admin PUT; and the `qemu` driver
in the lifecycle loop for real (no credential, created, reached on loopback, drained,
deleted, its orphans swept). Both databases."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Engine, select

from control_plane.dispatch.addresses import address_of
from control_plane.dispatch.nodes import NodeLifecycle
from control_plane.providers.base import VmSpec, node_labels
from control_plane.providers.lifecycle import Step
from control_plane.providers.qemu.driver import QemuProvider, QemuSettings
from control_plane.providers.registry import HetznerSettings, default_drivers
from control_plane.storage.db import node_machines
from tests.capabilities import missing
from tests.providers.hetzner_standin import StandIn, serving
from tests.providers.test_node_loop import (
    PLANE,
    SETTINGS,
    TOKEN,
    Clock,
    ask_for_node,
    loop,
    phase,
    release,
    report,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
DOMAIN = "nodes.example.test"


@pytest.fixture
async def api() -> AsyncIterator[tuple[StandIn, str]]:
    standin = StandIn(token=TOKEN)
    async with serving(standin) as endpoint:
        yield standin, endpoint


def address(engine: Engine, node_id: str) -> tuple[str, str | None] | None:
    with engine.connect() as conn:
        found = address_of(conn, node_id, DOMAIN)
    return None if found is None else (found.viewer_url, found.tls_name)


async def test_a_cloud_vm_is_reached_at_its_public_address(
    engine: Engine, api: tuple[StandIn, str]
) -> None:
    standin, endpoint = api
    clock = Clock()
    ask_for_node(engine, "n-a1", "alice", clock.now)
    assert address(engine, "n-a1") is None  # nothing is known before the create
    assert (await loop(engine, endpoint, clock).pass_once())["n-a1"].step is Step.CREATE
    (server,) = standin.live()
    ip = f"203.0.113.{server['id'] % 250 + 1}"
    # the daemon's own port, over TLS, its certificate checked under the node's name
    assert address(engine, "n-a1") == (f"wss://{ip}:8080/v1/ws", f"n-a1.{DOMAIN}")


async def test_an_adopted_vm_is_reached_at_its_address_too(
    engine: Engine, api: tuple[StandIn, str]
) -> None:
    standin, endpoint = api
    clock = Clock()
    ask_for_node(engine, "n-a2", "alice", clock.now)
    standin.fail("POST", "/v1/servers", "no-answer")
    await loop(engine, endpoint, clock, timeout_s=0.5, holder="a").pass_once()
    # the answer never came: only the provisioned name is known (no DNS serves it here)
    assert address(engine, "n-a2") == (f"wss://n-a2.{DOMAIN}:8080/v1/ws", f"n-a2.{DOMAIN}")
    clock.now += SETTINGS.backoff_first_s + 1
    assert (await loop(engine, endpoint, clock, holder="b").pass_once())["n-a2"].step is Step.ADOPT
    (server,) = standin.live()
    found = address(engine, "n-a2")
    assert found is not None and found[0] == f"wss://203.0.113.{server['id'] % 250 + 1}:8080/v1/ws"


def qemu_loop(engine: Engine, tmp_path: Path, clock: Clock, **qemu: object) -> NodeLifecycle:
    absent = [t for t in ("qemu-system-x86_64", "qemu-img", "cloud-localds") if not shutil.which(t)]
    if absent:
        missing(f"the qemu driver needs {', '.join(absent)}")
    base = tmp_path / "base.img"
    with base.open("wb") as f:
        f.truncate(1 << 20)  # blank: the firmware finds nothing to boot, the VM idles
    settings = QemuSettings(state_dir=tmp_path / "vms", image=base, accel="tcg")
    settings = settings.model_copy(update=qemu)
    nl = loop(engine, "http://127.0.0.1:9", clock)
    nl.hetzner = HetznerSettings()  # no platform account, no user credential anywhere
    nl.qemu = settings
    nl.drivers = default_drivers(nl.hetzner, settings)
    return nl


def qemu_of(nl: NodeLifecycle) -> QemuProvider:
    driver = nl.drivers("qemu", "")
    assert isinstance(driver, QemuProvider)
    return driver


@pytest.mark.slow
async def test_the_qemu_provider_makes_reaches_and_deletes_a_node_with_no_credential(
    engine: Engine, tmp_path: Path
) -> None:
    clock = Clock()
    nl = qemu_loop(engine, tmp_path, clock)
    driver = qemu_of(nl)
    try:
        ask_for_node(engine, "n-q1", "alice", clock.now, provider="qemu")
        assert (await nl.pass_once())["n-q1"].step is Step.CREATE
        (vm,) = await anyio.to_thread.run_sync(driver.list, node_labels(PLANE, "n-q1"))
        directory = driver.settings.state_dir / vm.provider_id
        pid = driver.running_pid(directory)
        assert pid is not None
        # reached through its host forward on loopback, TLS checked under the node's name
        assert address(engine, "n-q1") == (
            f"wss://127.0.0.1:{vm.viewer_port}/v1/ws",
            f"n-q1.{DOMAIN}",
        )
        report(engine, "n-q1", clock.now)
        assert (await nl.pass_once())["n-q1"].step is Step.MARK_READY
        release(engine, "n-q1", clock.now)
        clock.now += SETTINGS.warm_window_s + 1
        report(engine, "n-q1", clock.now, ["ready"])
        assert (await nl.pass_once())["n-q1"].step is Step.DRAIN
        clock.now += 5
        report(engine, "n-q1", clock.now, ["ready"], drained=True)
        assert (await nl.pass_once())["n-q1"].step is Step.DELETE
        # no qemu left, its directory gone
        assert not directory.exists()
        assert (
            not Path(f"/proc/{pid}/cmdline").exists()
            or not Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        assert (await nl.pass_once())["n-q1"].step is Step.FORGET
        assert phase(engine, "n-q1") == "gone"
    finally:
        for left in driver.list({}):
            driver.delete(left.provider_id)


@pytest.mark.slow
async def test_the_sweep_deletes_qemu_vms_no_row_owns(engine: Engine, tmp_path: Path) -> None:
    clock = Clock()
    nl = qemu_loop(engine, tmp_path, clock)
    driver = qemu_of(nl)
    try:

        def make(name: str, labels: dict[str, str]) -> None:
            driver.create(VmSpec(name, "small", None, "", "#cloud-config\n", labels))

        await anyio.to_thread.run_sync(make, "ghost", node_labels(PLANE, "n-ghost"))
        await anyio.to_thread.run_sync(make, "theirs", node_labels("cp-other", "n-x"))
        assert len(await nl.sweep()) == 1
        assert [v.labels["vm-agent/plane"] for v in driver.list({})] == ["cp-other"]
    finally:
        for left in driver.list({}):
            driver.delete(left.provider_id)


async def test_qemu_not_set_up_makes_no_vm_and_says_why(engine: Engine) -> None:
    clock = Clock()
    nl = loop(engine, "http://127.0.0.1:9", clock)
    ask_for_node(engine, "n-q2", "alice", clock.now, provider="qemu")
    assert (await nl.pass_once())["n-q2"].step is Step.WAIT
    with engine.connect() as conn:
        reason = conn.execute(select(node_machines.c.reason)).scalar_one()
    assert "CONTROL_PLANE_QEMU_IMAGE" in str(reason) and phase(engine, "n-q2") == "requested"
    # a user's stored "credential" for qemu opens nothing: the machine is the operator's
    from control_plane.providers import credentials

    credentials.store(engine, nl.sealer, "alice", "qemu", "let-me-in", now=clock.now)
    clock.now += SETTINGS.backoff_max_s + 1
    assert (await nl.pass_once())["n-q2"].step is Step.WAIT
    assert phase(engine, "n-q2") == "requested"
