"""A node that never reports ready is deleted, and its task placed again once: the
control plane's provider is `qemu`, but its guests get no forward to it, so no boot can
fetch the artifacts or say `ready`. The submitted task makes a real VM; past the ready
deadline that VM is deleted and one more is made for the task; past its deadline that one
is deleted too and the task fails `no_node` with the reason. Two VMs in all, never two at
once, and none left (no qemu process, no VM directory).

Figures: submitted to failed, and the deadline it was made of."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal

from control_plane.dispatch.nodes import NodeSettings
from control_plane.providers.qemu.driver import QemuSettings
from tests.vm.figures import FigureBook
from tests.vm.image import VMImage
from tests.vm.plane_host import HostPlane
from tests.vm.qemu_plane import (
    ENDS,
    SMALL,
    console_tail,
    provider_plane,
    qemu_settings_for,
    qemus_of,
    vm_dirs,
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

RUN = "never-ready"
READY_S = 60.0  # short: these guests cannot become ready however long they are given
ENDED_S = 900.0  # two deadlines, the creates and deletes between them, a loaded host


@pytest.fixture
def qemu_settings(vm_image: VMImage, tmp_path: Path) -> QemuSettings:
    return qemu_settings_for(vm_image, tmp_path / "qemu-vms")


@pytest.fixture
def plane(
    vm_portal: BlockingPortal, vm_artifacts: Path, qemu_settings: QemuSettings, tmp_path: Path
) -> Iterator[HostPlane]:
    qemu_settings.state_dir.mkdir()
    nodes = NodeSettings(pass_interval_s=1.0, ready_deadline_s=READY_S, sweep_interval_s=60.0)
    with provider_plane(
        vm_portal, tmp_path / "plane", vm_artifacts, qemu_settings, nodes, reachable=False
    ) as served:
        yield served


def test_a_node_never_ready_is_deleted_and_its_task_placed_again_once(
    plane: HostPlane, qemu_settings: QemuSettings, vm_figures: FigureBook
) -> None:
    state_dir = qemu_settings.state_dir
    user = {"Authorization": f"Bearer {plane.plane.tokens.mint_user_token('nora')}"}
    body = {"taskId": "never-1", "agent": "fake", "prompt": "Anyone?", "requirements": SMALL}
    submitted_at = time.time()
    submitted = plane.http.post("/api/tasks", json=body, headers=user)
    assert submitted.status_code == 201, submitted.text
    first_node = submitted.json()["nodeId"]
    assert first_node, submitted.json()

    seen: set[str] = set()
    deadline = time.monotonic() + ENDED_S
    task = submitted.json()
    while task["status"] not in ENDS:
        dirs = vm_dirs(state_dir)
        assert len(dirs) <= 1, f"two VMs at once for one task: {dirs}"
        seen.update(d.name for d in dirs)
        if time.monotonic() > deadline:
            pytest.fail(f"task still {task['status']} after {ENDED_S:g} s; VMs seen: {seen}")
        time.sleep(1)
        task = plane.http.get("/api/tasks/never-1", headers=user).json()
    failed_at = time.time()

    outcome = task.get("outcome") or {}
    assert task["status"] == "failed", (task, console_tail(state_dir))
    assert outcome.get("kind") == "no_node", task
    assert "no node became ready" in str(outcome.get("reason")), task
    assert len(seen) == 2, f"the node and the one placed again, no third: {seen}"
    assert plane.node(first_node).get("ready_at") is None

    # and nothing of either is left on this machine
    deadline = time.monotonic() + 120
    while vm_dirs(state_dir) or qemus_of(state_dir):
        if time.monotonic() > deadline:
            pytest.fail(f"VMs left after the task failed: {vm_dirs(state_dir)}")
        time.sleep(1)
    vm_figures.add(RUN, "ready deadline", READY_S, "s")
    vm_figures.add(
        RUN, "task submitted to failed (two VMs never ready)", failed_at - submitted_at, "s"
    )
