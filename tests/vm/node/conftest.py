"""One node for the package, made as a user's task makes one: a task submitted to a control
plane whose provider is `qemu` has the lifecycle create the VM (the cached Debian image
unchanged as its base, the user-data the lifecycle made), and the checks of tests/vm/node/
run against it. No `POST /api/nodes`, no address PUT: the dispatcher reaches the node where
the driver said.

The boot's figures (to ready from qemu's and cloud-init's start, each install step) are
recorded here, whatever tests run. The driver's guest agent channel (its `guest_agent`
setting) is how the checks look inside. After the first task completed the fixture adds
two agents to the VM's catalog (the hostile fake agent the containment checks drive, and
the fake agent that commits for the repository check) and restarts the unit once. The
guest reaches the control plane, the model stand-in and the GitHub stand-in through the
driver's guest forwards; the warm window outlasts the package.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal

from control_plane.dispatch.nodes import NodeSettings
from control_plane.providers.qemu import vmdir
from control_plane.providers.qemu.driver import QemuProvider, QemuSettings
from tests.vm.adopted import adopt
from tests.vm.booted import READY_SECONDS, UNIT, BootedNode
from tests.vm.figures import FigureBook
from tests.vm.fixtures import VMLauncher
from tests.vm.github_host import GUEST_GITHUB_PORT, GitHubHost
from tests.vm.image import VMImage
from tests.vm.model_host import GUEST_MODEL_PORT, ModelHost, anthropic_stand_in
from tests.vm.plane_host import CreatedNode, HostPlane
from tests.vm.qemu_plane import (
    SMALL,
    console_tail,
    provider_plane,
    qemu_settings_for,
    wait_task,
)

SWAP_MB = 512
SWAPPINESS = 17
AGENT_START_S = 300.0  # the node's bound on an agent's initialize plus session/new
AGENTS_FILE = "/etc/vm-agent/agents.toml"
HOSTILE_COMMAND = (
    "/opt/vm-agent/bin/vm-agent",
    *("fake-agent", "--scenario", "hostile", "--state-dir", "~/.fake-hostile"),
)
COMMIT_AGENT = "fake-commit"
COMMIT_COMMAND = (
    "/opt/vm-agent/bin/vm-agent",
    *("fake-agent", "--scenario", "commit", "--state-dir", "~/.fake-commit"),
)
MODEL_KEY = "sk-ant-vmtest-" + secrets.token_hex(12)
FIRST_TASK = "vm-node-first"
VM_SEEN_S = 300.0  # the lifecycle's create: the user-data, the overlay, qemu's detach
TASK_S = 600.0


@pytest.fixture(scope="package")
def model(vm_portal: BlockingPortal) -> Iterator[ModelHost]:
    with anthropic_stand_in(vm_portal) as host:
        yield host


@pytest.fixture(scope="package")
def node_qemu(vm_image: VMImage, tmp_path_factory: pytest.TempPathFactory) -> QemuSettings:
    state_dir = tmp_path_factory.mktemp("node-vms")
    return qemu_settings_for(vm_image, state_dir).model_copy(update={"guest_agent": True})


@pytest.fixture(scope="package")
def node_plane(  # noqa: PLR0917 - a fixture's parameters are the fixtures it needs
    vm_portal: BlockingPortal,
    vm_artifacts: Path,
    node_qemu: QemuSettings,
    model: ModelHost,
    vm_github: GitHubHost,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostPlane]:
    nodes = NodeSettings(
        pass_interval_s=1.0,
        ready_deadline_s=READY_SECONDS,
        warm_window_s=6 * 3600.0,  # idle between checks: kept for the package
        sweep_interval_s=60.0,
        # claude's first start in a cold, emulated guest (Node loading its bundle) takes
        # minutes on a loaded host, past the daemon's default 60 s
        agent_start_timeout_s=AGENT_START_S,
        swap_mb=SWAP_MB,
        swappiness=SWAPPINESS,
    )
    forwards = {GUEST_MODEL_PORT: model.port, GUEST_GITHUB_PORT: vm_github.git_port}
    base = tmp_path_factory.mktemp("node-plane")
    with provider_plane(
        vm_portal, base, vm_artifacts, node_qemu, nodes, forwards=forwards,
        **vm_github.plane_settings(),
    ) as plane:  # fmt: skip
        # claude's key and where its provider is, as an operator keeps them: the secret store
        plane.set_agent_secrets(
            {"claude": {"ANTHROPIC_API_KEY": MODEL_KEY, "ANTHROPIC_BASE_URL": model.guest_url}}
        )
        yield plane


def the_vm(state_dir: Path, node_id: str) -> Path:
    """The one VM directory the driver made, once its record says qemu detached."""
    deadline = time.monotonic() + VM_SEEN_S
    while True:
        dirs = [d for d in state_dir.iterdir() if vmdir.valid_vm_id(d.name)]
        assert len(dirs) <= 1, f"more than one VM for one node: {dirs}"
        if dirs and (dirs[0] / vmdir.RECORD).exists():
            return dirs[0]
        if time.monotonic() > deadline:
            pytest.fail(f"no VM for node {node_id} after {VM_SEEN_S:g} s")
        time.sleep(0.5)


@pytest.fixture(scope="package")
def node(
    vm_launcher: VMLauncher,
    node_plane: HostPlane,
    node_qemu: QemuSettings,
    vm_figures: FigureBook,
) -> Iterator[BootedNode]:
    plane = node_plane
    user = {"Authorization": f"Bearer {plane.plane.tokens.mint_user_token('nora')}"}
    body = {"taskId": FIRST_TASK, "agent": "fake", "prompt": "A node of its own.",
            "requirements": SMALL}  # fmt: skip
    submitted_at = time.time()
    submitted = plane.http.post("/api/tasks", json=body, headers=user)
    assert submitted.status_code == 201, submitted.text
    node_id = str(submitted.json()["nodeId"])
    try:
        directory = the_vm(node_qemu.state_dir, node_id)
    except BaseException:
        print(console_tail(node_qemu.state_dir))
        raise
    vm = adopt(QemuProvider(node_qemu), directory)
    try:
        with vm_launcher.reported(vm, label="node"):
            vm.wait_agent()
            answer = plane.provisioning(node_id)
            booted = BootedNode(vm, plane, CreatedNode(node_id, "", answer), None, "node")
            ready = booted.wait_ready()
            booted.record_boot(ready, vm_figures)
            vm_figures.add("node", "task submitted to node ready", ready - submitted_at, "s")
            # what the VM was given: the lifecycle's user-data, as cloud-init keeps it
            user_data = vm.read_text("/var/lib/cloud/instance/user-data.txt")
            booted.created = CreatedNode(node_id, user_data, answer)
            booted.cloud_init = vm.wait_cloud_init()
            wait_task(plane, user, FIRST_TASK, TASK_S, lambda: booted.journal(lines=80))
            vm_figures.add("node", "task submitted to completed", time.time() - submitted_at, "s")
            entries = [("hostile", HOSTILE_COMMAND), (COMMIT_AGENT, COMMIT_COMMAND)]
            booted.append_text(
                AGENTS_FILE,
                "".join(f"\n[agents.{n}]\ncommand = {json.dumps(list(c))}\n" for n, c in entries),
            )
            booted.restart()
            booted.viewer_tls()
            vm.note(f"{UNIT}: {booted.unit('ActiveState', 'NRestarts')}")
            yield booted
    finally:
        vm.stop()  # the view only: the plane's teardown deletes the VM through the driver
