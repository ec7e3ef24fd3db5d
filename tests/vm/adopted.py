"""A VM the control plane's qemu driver made, driven like one this harness booted: its
directory's console watched for the boot's milestones, its guest agent channel (the
driver's `guest_agent` setting) for commands and files, its viewer forward from the
driver's record. The control plane owns it: stopping the view leaves the VM to be deleted
by the lifecycle or the plane's teardown."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from control_plane.providers.qemu import vmdir
from control_plane.providers.qemu.command import HostForward, QemuSpec
from control_plane.providers.qemu.driver import QemuProvider
from tests.vm import timeline as tl
from tests.vm.launch import ConsoleWatcher
from tests.vm.machine import VM
from tests.vm.qga import GuestAgent


@dataclass
class Adopted:
    """`launch.Running` for a driver-made qemu: alive while the driver finds its process."""

    spec: QemuSpec
    origin: float
    timeline: tl.Timeline
    qemu_log: Path
    driver: QemuProvider
    directory: Path
    watcher: ConsoleWatcher | None = None
    notes: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.driver.running_pid(self.directory) is not None

    def kill(self) -> None:
        """Stops watching; the VM itself is the control plane's to delete."""
        if self.watcher is not None:
            self.watcher.stop()


def adopt(driver: QemuProvider, directory: Path) -> VM:
    """The VM of `directory` once the driver recorded it (its qemu detached), watched from
    now on. Its times count from the record's `created_at` (qemu's start, within the
    detach), so milestones the console showed before this call get this call's time:
    adopt as soon as the record exists."""
    record = vmdir.parse_record((directory / vmdir.RECORD).read_text())
    assert record.created_at is not None and record.viewer_host_port is not None, record
    origin = time.monotonic() - max(0.0, time.time() - record.created_at)
    spec = QemuSpec(
        kernel=driver.settings.kernel,
        initrd=driver.settings.initrd,
        rootfs=directory / vmdir.DISK,
        seed=directory / vmdir.SEED,
        console_log=directory / vmdir.CONSOLE,
        agent_socket=directory / vmdir.GUEST_AGENT,
        accel=str(record.accel),
        host_forwards=(HostForward(record.viewer_host_port, driver.settings.viewer_port),),
    )
    timeline = tl.Timeline()
    timeline.mark(tl.QEMU_START, 0.0)
    running = Adopted(spec, origin, timeline, directory / vmdir.QEMU_LOG, driver, directory)
    running.watcher = ConsoleWatcher(
        spec.console_log, lambda name: timeline.mark(name, time.monotonic() - origin)
    )
    return VM(running, GuestAgent(directory / vmdir.GUEST_AGENT), directory, directory.name)
