"""The control plane boots its own node: a task submitted with `POST /api/tasks` to a
control plane whose provider is `qemu` makes it create a real VM on this machine (the
cached Debian image as the base of a copy-on-write disk, the user-data in a NoCloud seed,
`restrict=on` forwards), the task runs the real claude-agent-acp against the model
stand-in and completes, and once the warm window has passed the node is drained and
deleted through the driver: no qemu left, its directory gone. No admin PUT of an address:
the dispatcher reaches the node where the driver said it is.

Figures: qemu start to ready, task submitted to ready and to completed, completed to the
node's deletion, and which accelerator ran the guest."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal

from control_plane.dispatch.nodes import NodeSettings
from control_plane.providers.qemu import vmdir
from control_plane.providers.qemu.driver import QemuProvider, QemuSettings
from tests.real_agents.model_api import Reply
from tests.vm.figures import FigureBook
from tests.vm.image import VMImage
from tests.vm.model_host import GUEST_MODEL_PORT, ModelHost, anthropic_stand_in
from tests.vm.plane_host import GUEST_PLANE_PORT, HostPlane, host_plane, plane_tls

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2700)]

RUN = "qemu-provider"
WARM_WINDOW_S = 30.0
READY_S = 1500.0  # a boot that installs the artifacts under TCG on a loaded host
TASK_S = 600.0
GONE_S = 300.0  # the warm window, a heartbeat to learn of the drain, one to say drained
ENDS = ("completed", "failed", "crashed", "cancelled", "timed_out", "auth_required")
MODEL_KEY = "sk-ant-vmtest-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def model(vm_portal: BlockingPortal) -> Iterator[ModelHost]:
    with anthropic_stand_in(vm_portal) as host:
        yield host


@pytest.fixture(scope="module")
def qemu_settings(vm_image: VMImage, tmp_path_factory: pytest.TempPathFactory) -> QemuSettings:
    return QemuSettings(
        state_dir=tmp_path_factory.mktemp("qemu-vms"),
        image=vm_image.rootfs,
        image_format="raw",
        kernel=vm_image.kernel,
        initrd=vm_image.initrd,
        accel="auto",  # KVM if its guest prints within the probe, else TCG (VM-NOTES)
        kvm_probe_s=20.0,
    )


@pytest.fixture(scope="module")
def plane(
    vm_portal: BlockingPortal,
    vm_artifacts: Path,
    model: ModelHost,
    qemu_settings: QemuSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostPlane]:
    base = tmp_path_factory.mktemp("qemu-plane")

    def app_options(port: int) -> dict[str, Any]:
        # the guests reach this control plane and the model stand-in, nothing else
        forwards = {GUEST_PLANE_PORT: port, GUEST_MODEL_PORT: model.port}
        return {
            "qemu": qemu_settings.model_copy(update={"guest_forwards": forwards}),
            "node_settings": NodeSettings(
                pass_interval_s=1.0,
                warm_window_s=WARM_WINDOW_S,
                ready_deadline_s=READY_S,
                sweep_interval_s=60.0,
            ),
        }

    try:
        with host_plane(
            vm_portal, base / "state", vm_artifacts, plane_tls(base / "tls"),
            app_options=app_options, default_provider="qemu", node_cert_ttl_s=600,
        ) as served:  # fmt: skip
            served.set_agent_secrets(
                {"claude": {"ANTHROPIC_API_KEY": MODEL_KEY, "ANTHROPIC_BASE_URL": model.guest_url}}
            )
            yield served
    finally:  # whatever happened, no VM outlives the module
        driver = QemuProvider(qemu_settings)
        for vm in driver.list({}):
            driver.delete(vm.provider_id)


def qemus_of(state_dir: Path) -> list[int]:
    """Live processes whose command line names a file under the state directory."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(state_dir).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def vm_dirs(state_dir: Path) -> list[Path]:
    return [d for d in state_dir.iterdir() if vmdir.valid_vm_id(d.name)]


def console_tail(state_dir: Path) -> str:
    return "\n".join(
        f"--- {d.name} console ---\n{(d / vmdir.CONSOLE).read_text(errors='replace')[-4000:]}"
        for d in vm_dirs(state_dir)
        if (d / vmdir.CONSOLE).exists()
    )


def test_a_task_boots_its_own_vm_runs_and_the_idle_node_is_deleted(
    plane: HostPlane, model: ModelHost, qemu_settings: QemuSettings, vm_figures: FigureBook
) -> None:
    state_dir = qemu_settings.state_dir
    answer = "The control plane booted this VM itself."
    model.script.add(Reply(text=answer))
    user = {"Authorization": f"Bearer {plane.plane.tokens.mint_user_token('quinn')}"}
    body = {
        "taskId": "qemu-task-1",
        "agent": "claude",
        "prompt": "Say hello from a VM the control plane made.",
        "requirements": {"minVcpu": 0.5, "minMemoryGb": 0.5, "minDiskGb": 1},
    }
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
    deadline = time.monotonic() + TASK_S
    task = plane.http.get("/api/tasks/qemu-task-1", headers=user).json()
    while task["status"] not in ENDS and time.monotonic() < deadline:
        time.sleep(1)
        task = plane.http.get("/api/tasks/qemu-task-1", headers=user).json()
    if task["status"] != "completed":
        why = {k: task.get(k) for k in ("status", "reason", "outcome", "transitions")}
        pytest.fail(f"task: {why}\n{console_tail(state_dir)}")
    completed_at = time.time()
    vm_figures.add(RUN, "task submitted to completed", completed_at - submitted_at, "s")
    turns = model.script.turns()
    assert turns and "Say hello from a VM the control plane made." in turns[-1].text

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
