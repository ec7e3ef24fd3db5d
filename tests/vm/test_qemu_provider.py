"""The control plane boots its own node: a task submitted with `POST /api/tasks` to a
control plane whose provider is `qemu` makes it create a real VM on this machine (the
cached Debian image as the base of a copy-on-write disk, the user-data in a NoCloud seed,
`restrict=on` forwards), the task runs on it (the node's built-in fake agent: a real
process under the daemon, and fast enough for the daemon's 60 s start bound on a cold,
emulated guest, which claude-agent-acp's first start is not) and completes; a second task
inside the warm window takes the same node without a boot; once the warm window has
passed the node is drained and deleted through the driver: no qemu left, its directory
gone. No admin PUT of an address: the dispatcher reaches the node where the driver said.

Figures: the accelerator, qemu start to ready, task submitted to ready, to the first agent
update and to completed
(fresh node, warm node), completed to the VM's deletion."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal

from control_plane.dispatch.nodes import NodeSettings
from control_plane.providers.qemu import vmdir
from control_plane.providers.qemu.driver import QemuSettings
from tests.vm import qemu_plane
from tests.vm.booted import message_text
from tests.vm.figures import FigureBook
from tests.vm.image import VMImage
from tests.vm.plane_host import HostPlane
from tests.vm.qemu_plane import (
    SMALL,
    console_tail,
    provider_plane,
    qemu_settings_for,
    qemus_of,
    vm_dirs,
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2700)]

RUN = "qemu-provider"
WARM_WINDOW_S = 30.0
READY_S = 1500.0  # a boot that installs the artifacts under TCG on a loaded host
TASK_S = 600.0
EVENTS_S = 60.0  # the outbox after the outcome: a flush or two
GONE_S = 300.0  # the warm window, a heartbeat to learn of the drain, one to say drained


@pytest.fixture(scope="module")
def qemu_settings(vm_image: VMImage, tmp_path_factory: pytest.TempPathFactory) -> QemuSettings:
    return qemu_settings_for(vm_image, tmp_path_factory.mktemp("qemu-vms"))


@pytest.fixture(scope="module")
def plane(
    vm_portal: BlockingPortal,
    vm_artifacts: Path,
    qemu_settings: QemuSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostPlane]:
    nodes = NodeSettings(
        pass_interval_s=1.0,
        warm_window_s=WARM_WINDOW_S,
        ready_deadline_s=READY_S,
        sweep_interval_s=60.0,
    )
    base = tmp_path_factory.mktemp("qemu-plane")
    with provider_plane(vm_portal, base, vm_artifacts, qemu_settings, nodes) as served:
        yield served


def wait_task(plane: HostPlane, user: dict[str, str], task_id: str, state_dir: Path) -> None:
    qemu_plane.wait_task(plane, user, task_id, TASK_S, lambda: console_tail(state_dir))


def echoed(plane: HostPlane, user: dict[str, str], task_id: str) -> str:
    """The agent's message text in the task's events (what the node's outbox delivered).

    The outcome comes over the node's connection and may arrive before the outbox brings
    the prompt's events (docs/control-plane.md), so this waits for the `prompt.finished` event."""
    deadline = time.monotonic() + EVENTS_S
    while True:
        events = plane.http.get(f"/api/tasks/{task_id}/events", headers=user).json()["events"]
        if any(e["type"] == "prompt.finished" for e in events) or time.monotonic() > deadline:
            break
        time.sleep(1)
    return message_text(events)


def first_update(
    plane: HostPlane, user: dict[str, str], task_id: str, submitted_at: float, *, on: str,
    figures: FigureBook,
) -> None:  # fmt: skip
    """Submitted to the agent's first update, as the node logged it (`firstUpdateAt`: the
    guest's clock, set from this host's at boot; no NTP in the guest)."""
    first = plane.http.get(f"/api/tasks/{task_id}", headers=user).json()["timings"]["firstUpdateAt"]
    assert first is not None, f"task {task_id}: no agent update recorded"
    at = datetime.fromisoformat(first).timestamp()
    figures.add(RUN, f"task submitted to first agent update ({on})", at - submitted_at, "s")


def test_a_task_boots_its_own_vm_runs_and_the_idle_node_is_deleted(
    plane: HostPlane, qemu_settings: QemuSettings, vm_figures: FigureBook
) -> None:
    state_dir = qemu_settings.state_dir
    user = {"Authorization": f"Bearer {plane.plane.tokens.mint_user_token('quinn')}"}
    prompt = "Hello from a VM the control plane made."
    body = {"taskId": "qemu-1", "agent": "fake", "prompt": prompt, "requirements": SMALL}
    submitted_at = time.time()
    submitted = plane.http.post("/api/tasks", json=body, headers=user)
    assert submitted.status_code == 201, submitted.text
    node_id = submitted.json()["nodeId"]
    assert node_id, submitted.json()  # a node asked for: none existed

    # the lifecycle makes the VM; the node bootstraps and reports ready by itself
    deadline = time.monotonic() + READY_S
    ready_at = None
    while ready_at is None:
        dirs = vm_dirs(state_dir)
        assert len(dirs) <= 1, f"more than one VM for one node: {dirs}"
        if time.monotonic() > deadline:
            pytest.fail(f"node {node_id} not ready in {READY_S:g} s\n{console_tail(state_dir)}")
        if dirs and not qemus_of(state_dir) and (dirs[0] / vmdir.RECORD).exists():
            pytest.fail(f"qemu exited before ready\n{console_tail(state_dir)}")
        ready = plane.node(node_id).get("ready_at")
        ready_at = None if ready is None else float(ready)
        time.sleep(2)
    [directory] = vm_dirs(state_dir)
    record = vmdir.parse_record((directory / vmdir.RECORD).read_text())
    assert record.created_at is not None and record.viewer_host_port is not None
    vm_figures.add(RUN, "accelerator", str(record.accel))
    vm_figures.add(
        RUN, "qemu start to ready at the control plane", ready_at - record.created_at, "s"
    )
    vm_figures.add(RUN, "task submitted to node ready", ready_at - submitted_at, "s")

    # the task completes on it, reached where the driver said: no address was PUT
    wait_task(plane, user, "qemu-1", state_dir)
    vm_figures.add(RUN, "task submitted to completed (fresh node)", time.time() - submitted_at, "s")
    first_update(plane, user, "qemu-1", submitted_at, on="fresh node", figures=vm_figures)
    assert prompt in echoed(plane, user, "qemu-1")

    # a second task inside the warm window: the same node, no second VM
    again = {"taskId": "qemu-2", "agent": "fake", "prompt": "Once more.", "requirements": SMALL}
    submitted_at = time.time()
    second = plane.http.post("/api/tasks", json=again, headers=user)
    assert second.status_code == 201, second.text
    assert second.json()["nodeId"] == node_id, second.json()
    wait_task(plane, user, "qemu-2", state_dir)
    completed_at = time.time()
    vm_figures.add(RUN, "task submitted to completed (warm node)", completed_at - submitted_at, "s")
    first_update(plane, user, "qemu-2", submitted_at, on="warm node", figures=vm_figures)
    assert vm_dirs(state_dir) == [directory]

    # idle past the warm window: drained, deleted, nothing left on this machine
    deadline = time.monotonic() + WARM_WINDOW_S + GONE_S
    while vm_dirs(state_dir) or qemus_of(state_dir):
        if time.monotonic() > deadline:
            pytest.fail(
                f"node {node_id} still there {WARM_WINDOW_S + GONE_S:g} s after its task ended:"
                f" {plane.node(node_id)}\n{console_tail(state_dir)}"
            )
        time.sleep(2)
    vm_figures.add(RUN, "task completed to the VM deleted", time.time() - completed_at, "s")
    assert list(state_dir.iterdir()) == []
