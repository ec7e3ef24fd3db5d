"""A control plane on this machine whose provider is `qemu`, for the VM checks of the
node lifecycle: its driver settings, and what a check reads of the VMs it made (their
directories, their qemu processes, their consoles)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal

from control_plane.dispatch.nodes import NodeSettings
from control_plane.providers.qemu import vmdir
from control_plane.providers.qemu.driver import QemuProvider, QemuSettings
from tests.vm.image import VMImage
from tests.vm.plane_host import GUEST_PLANE_PORT, HostPlane, host_plane, plane_tls

ENDS = ("completed", "failed", "crashed", "cancelled", "timed_out", "auth_required")
SMALL = {"minVcpu": 0.5, "minMemoryGb": 0.5, "minDiskGb": 1}


def qemu_settings_for(vm_image: VMImage, state_dir: Path) -> QemuSettings:
    return QemuSettings(
        state_dir=state_dir,
        image=vm_image.rootfs,
        image_format="raw",
        kernel=vm_image.kernel,
        initrd=vm_image.initrd,
        accel="auto",  # hardware KVM if its guest prints within the probe; here PVM: TCG
        kvm_probe_s=20.0,
    )


@contextmanager
def provider_plane(
    portal: BlockingPortal,
    base: Path,
    artifacts: Path,
    qemu: QemuSettings,
    nodes: NodeSettings,
    *,
    reachable: bool = True,
    forwards: dict[int, int] | None = None,
    **settings: Any,
) -> Iterator[HostPlane]:
    """``reachable=False``: the guests get no forward to this control plane (their boot
    cannot fetch the artifacts nor report ready). ``forwards``: more guest forwards (guest
    port -> host port: the model and GitHub stand-ins); ``settings``: the plane's own."""

    def app_options(port: int) -> dict[str, Any]:
        guest = {**(forwards or {}), **({GUEST_PLANE_PORT: port} if reachable else {})}
        return {
            "qemu": qemu.model_copy(update={"guest_forwards": guest}),
            "node_settings": nodes,
        }

    try:
        with host_plane(
            portal, base / "state", artifacts, plane_tls(base / "tls"),
            app_options=app_options, default_provider="qemu", node_cert_ttl_s=600, **settings,
        ) as served:  # fmt: skip
            yield served
    finally:  # whatever happened, no VM outlives the check
        driver = QemuProvider(qemu)
        for vm in driver.list({}):
            driver.delete(vm.provider_id)


def wait_task(
    plane: HostPlane, user: dict[str, str], task_id: str, timeout_s: float,
    context: Callable[[], str],
) -> None:  # fmt: skip
    """Until the task ends; a failure unless `completed`, with `context()` (a console's
    tail, a journal) after the task's status, reason, outcome and transitions."""
    deadline = time.monotonic() + timeout_s
    task = plane.http.get(f"/api/tasks/{task_id}", headers=user).json()
    while task["status"] not in ENDS and time.monotonic() < deadline:
        time.sleep(1)
        task = plane.http.get(f"/api/tasks/{task_id}", headers=user).json()
    if task["status"] != "completed":
        why = {k: task.get(k) for k in ("status", "reason", "outcome", "transitions")}
        pytest.fail(f"task {task_id}: {why}\n{context()}")


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
