"""The ``dev`` provider: the daemon of `vm-agent dev` as a node that exists already. Its
driver answers the daemon by its recorded labels, adopts only that node, forgets it on
delete (the daemon runs on), and the lifecycle (both databases) adopts the dev node by
label, marks it ready when it reports, and the sweep leaves it alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from control_plane.dispatch.nodes import NodeLifecycle
from control_plane.providers import dev
from control_plane.providers.base import ProviderError, VmSpec, VmStatus, node_labels
from control_plane.providers.lifecycle import Step
from control_plane.providers.registry import HetznerSettings, default_drivers, with_dev_node
from control_plane.storage import machines
from control_plane.storage.db import node_machines, nodes
from tests.providers.test_node_loop import PLANE, Clock, loop

NODE = "dev-node"
LABELS = node_labels(PLANE, NODE)


def spec(node_id: str) -> VmSpec:
    return VmSpec(name=node_id, size="existing", region=None, image="", user_data="",
                  labels=node_labels(PLANE, node_id))  # fmt: skip


def test_before_the_daemon_runs_nothing_is_listed(tmp_path: Path) -> None:
    driver = dev.DevProvider(tmp_path / "state.json")
    assert driver.list(LABELS) == []
    assert driver.get(NODE) is None
    driver.delete(NODE)  # idempotent: nothing to forget


def test_the_daemon_is_listed_by_its_labels_and_only_by_them(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    dev.record(state, NODE, LABELS)
    driver = dev.DevProvider(state)
    [vm] = driver.list(LABELS)
    assert (vm.provider_id, vm.node_id, vm.status) == (NODE, NODE, VmStatus.RUNNING)
    assert driver.list({"vm-agent/plane": PLANE}) == [vm]  # the sweep's selector
    assert driver.list(node_labels("cp-other", NODE)) == []  # another plane's
    assert driver.list(node_labels(PLANE, "n-2")) == []
    assert driver.get(NODE) == vm and driver.get("n-2") is None


def test_create_adopts_the_daemon_and_refuses_any_other_node(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    dev.record(state, NODE, None)
    driver = dev.DevProvider(state)
    assert driver.create(spec(NODE)).provider_id == NODE
    assert json.loads(state.read_text())["labels"] == LABELS
    with pytest.raises(ProviderError) as refused:
        driver.create(spec("node-123"))
    assert refused.value.applied is False and not refused.value.transient
    assert "makes no other" in str(refused.value)


def test_delete_forgets_and_leaves_the_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    dev.record(state, NODE, LABELS)
    driver = dev.DevProvider(state)
    driver.delete("someone-else")
    assert driver.list(LABELS)
    driver.delete(NODE)
    driver.delete(NODE)  # a second delete finds it gone
    assert driver.list(LABELS) == []
    assert json.loads(state.read_text()) == {"node_id": NODE, "labels": None}


def test_a_broken_state_file_is_a_transient_error_not_a_crash(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(ProviderError) as failed:
        dev.DevProvider(state).list(LABELS)
    assert failed.value.transient


@pytest.mark.anyio
@pytest.mark.integration
async def test_the_lifecycle_adopts_the_dev_node_and_never_sweeps_it(
    engine: Engine, tmp_path: Path
) -> None:
    state = tmp_path / "dev-provider.json"
    clock = Clock()
    nl: NodeLifecycle = loop(engine, "http://127.0.0.1:9/v1", clock)  # hetzner: never called
    nl.drivers = with_dev_node(default_drivers(HetznerSettings()), state)
    dev.record(state, NODE, LABELS)  # what `vm-agent dev` does once its daemon runs
    machines.adopt_existing(engine, NODE, dev.NAME, "", clock.now)
    decided = await nl.pass_once()
    assert decided[NODE].step is Step.ADOPT
    assert phase_and_id(engine) == ("booting", NODE)
    with engine.begin() as conn:  # the daemon reports ready (the callback's row)
        conn.execute(
            insert(nodes).values(node_id=NODE, ready_at=clock.now, last_heartbeat_at=clock.now)
        )
    clock.now += 1
    assert (await nl.pass_once())[NODE].step is Step.MARK_READY
    assert phase_and_id(engine)[0] == "ready"
    assert await nl.sweep() == []
    assert dev.DevProvider(state).list(LABELS)  # still answered
    # started again: the row is made afresh and adopted again
    machines.adopt_existing(engine, NODE, dev.NAME, "", clock.now)
    assert (await nl.pass_once())[NODE].step is Step.ADOPT


def phase_and_id(engine: Engine) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            select(node_machines.c.phase, node_machines.c.provider_id).where(
                node_machines.c.node_id == NODE
            )
        ).one()
    return str(row[0]), row[1]
