"""A node from the node image (tests/vm/node_image.py, `make node-image`): the control plane's
qemu provider boots it with the same kernel and qemu settings as test_qemu_provider.py boots
the plain image, its `vm-agent` and `agents` steps are skipped (the console says "already
installed", the runner's times are near 0) and a task completes on it. Then the mismatch:
the same image under a control plane whose wheelhouse differs (the same files with a few
zero bytes after the tar's end: another sha256) installs vm-agent as today and is ready;
the agents, whose bundle is the same, stay skipped.

Figures: qemu start to ready (node image), beside test_qemu_provider.py's plain-image figure
of the same run; the provisioning steps' times on both boots; the node image's build."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal

from control_plane.dispatch.nodes import NodeSettings
from control_plane.providers.qemu import vmdir
from control_plane.provisioning.artifacts.manifest import (
    load_manifest,
    sha256_of,
    write_manifest,
)
from tests import capabilities
from tests.vm.figures import FigureBook
from tests.vm.image import VMImage
from tests.vm.node_image import ensure_node_image
from tests.vm.plane_host import HostPlane
from tests.vm.qemu_plane import (
    SMALL,
    console_tail,
    provider_plane,
    qemu_settings_for,
    qemus_of,
    vm_dirs,
)
from tests.vm.test_qemu_provider import wait_task

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]

RUN = "node-image"
READY_S = 1500.0
SKIPPED = "already installed (node image): skipped"
STEP_DONE = re.compile(r"vm-agent provision: ([a-z-]+) done in (\d+) ms")
NODES = NodeSettings(pass_interval_s=1.0, warm_window_s=600.0, ready_deadline_s=READY_S)


@pytest.fixture(scope="module")
def node_image(vm_image: VMImage, vm_artifacts: Path, vm_figures: FigureBook) -> VMImage:
    if os.geteuid() != 0:
        capabilities.missing("the node image is built by a loop mount and chroot: needs root")
    started = time.monotonic()
    image, built = ensure_node_image(vm_image, vm_artifacts)
    how = "built" if built else "found cached"
    vm_figures.add(RUN, f"node image {how} in", time.monotonic() - started, "s")
    return image


def boot_one(
    portal: BlockingPortal, base: Path, artifacts: Path, image: VMImage, task_id: str
) -> tuple[float, str]:
    """One node from `image` under a qemu control plane serving `artifacts`, through one
    task run to completion: qemu start to ready (s), and the VM's console."""
    qemu = qemu_settings_for(image, base / "vms")
    qemu.state_dir.mkdir(parents=True)
    with provider_plane(portal, base, artifacts, qemu, NODES) as plane:
        user = {"Authorization": f"Bearer {plane.plane.tokens.mint_user_token('quinn')}"}
        body = {"taskId": task_id, "agent": "fake", "prompt": "Hello.", "requirements": SMALL}
        submitted = plane.http.post("/api/tasks", json=body, headers=user)
        assert submitted.status_code == 201, submitted.text
        ready_at = wait_ready(plane, submitted.json()["nodeId"], qemu.state_dir)
        [directory] = vm_dirs(qemu.state_dir)
        record = vmdir.parse_record((directory / vmdir.RECORD).read_text())
        assert record.created_at is not None
        wait_task(plane, user, task_id, qemu.state_dir)
        console = (directory / vmdir.CONSOLE).read_text(errors="replace")
    return ready_at - record.created_at, console


def wait_ready(plane: HostPlane, node_id: str, state_dir: Path) -> float:
    deadline = time.monotonic() + READY_S
    while True:
        ready = plane.node(node_id).get("ready_at")
        if ready is not None:
            return float(ready)
        dirs = vm_dirs(state_dir)
        if time.monotonic() > deadline:
            pytest.fail(f"node {node_id} not ready in {READY_S:g} s\n{console_tail(state_dir)}")
        if dirs and not qemus_of(state_dir) and (dirs[0] / vmdir.RECORD).exists():
            pytest.fail(f"qemu exited before ready\n{console_tail(state_dir)}")
        time.sleep(2)


def step_ms(console: str) -> dict[str, int]:
    return {name: int(ms) for name, ms in STEP_DONE.findall(console)}


def other_wheelhouse(artifacts: Path, into: Path) -> Path:
    """`artifacts` with a wheelhouse of another sha256 that installs the same (tar stops
    at its end-of-archive blocks; what follows them is never read)."""
    into.mkdir()
    manifest = load_manifest(artifacts)
    assert manifest.agents is not None
    os.link(artifacts / manifest.agents.file, into / manifest.agents.file)
    changed = into / f"other-{manifest.wheelhouse.file}"
    shutil.copyfile(artifacts / manifest.wheelhouse.file, changed)
    with changed.open("ab") as f:
        f.write(bytes(10240))
    wheelhouse = manifest.wheelhouse.model_copy(
        update={"file": changed.name, "sha256": sha256_of(changed), "size": changed.stat().st_size}
    )
    write_manifest(into, manifest.model_copy(update={"wheelhouse": wheelhouse}))
    return into


def test_a_node_from_the_node_image_skips_the_installs_and_runs_a_task(
    node_image: VMImage,
    vm_portal: BlockingPortal,
    vm_artifacts: Path,
    vm_figures: FigureBook,
    tmp_path: Path,
) -> None:
    seconds, console = boot_one(vm_portal, tmp_path, vm_artifacts, node_image, "node-image-1")
    vm_figures.add(RUN, "qemu start to ready at the control plane (node image)", seconds, "s")
    assert f"vm-agent: wheelhouse {node_image.manifest['wheelhouse']['sha256']} {SKIPPED}" in (
        console
    ), console[-4000:]
    assert f"vm-agent: agent bundle {node_image.manifest['agents']['sha256']}" in console
    assert console.count(SKIPPED) >= 2
    steps = step_ms(console)
    for name, ms in steps.items():
        vm_figures.add(RUN, f"step {name} (node image)", ms / 1000, "s")
    # a skip is a marker read and `vm-agent --version`: seconds under TCG, not the install's ~75
    assert steps["vm-agent"] < 20000 and steps["agents"] < 5000, steps


def test_the_node_image_under_another_wheelhouse_installs_it_as_today(
    node_image: VMImage,
    vm_portal: BlockingPortal,
    vm_artifacts: Path,
    vm_figures: FigureBook,
    tmp_path: Path,
) -> None:
    artifacts = other_wheelhouse(vm_artifacts, tmp_path / "artifacts")
    seconds, console = boot_one(vm_portal, tmp_path / "plane", artifacts, node_image, "mismatch-1")
    vm_figures.add(RUN, "qemu start to ready (node image, another wheelhouse)", seconds, "s")
    assert f"wheelhouse {load_manifest(artifacts).wheelhouse.sha256} {SKIPPED}" not in console
    assert console.count(SKIPPED) == 1, console[-4000:]  # the agents' alone
    steps = step_ms(console)
    vm_figures.add(
        RUN, "step vm-agent (installed over the node image)", steps["vm-agent"] / 1000, "s"
    )
    assert steps["vm-agent"] > steps["agents"]
