"""Bad input at boot, each on a fresh VM (these need a first boot): the control plane
unreachable when the daemon first starts (it retries with backoff, systemd does not give
up, and it reports ready once it can), and an artifact whose hash does not match (the boot
fails clearly and nothing half-installed runs). Both nodes are made by the control plane
and boot its user-data unchanged; neither installs agents (only the daemon matters here).
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal

from control_plane.provisioning.artifacts.manifest import MANIFEST_NAME, load_manifest
from tests.vm.booted import READY_SECONDS, TIMINGS_FILE, UNIT, BootedNode, seconds_of
from tests.vm.figures import FigureBook, parse_timings
from tests.vm.fixtures import VMLauncher
from tests.vm.machine import VM
from tests.vm.plane_host import HostPlane, host_plane

pytestmark = pytest.mark.vm

BARE = {"agents": [], "swap": {"size_mb": 0, "swappiness": 60}}
# how long past the unit's TimeoutStartSec the outage lasts: systemd must not give up
PAST_START_TIMEOUT_S = 20.0
RETRY_LINE = "bootstrap: control plane not reachable"


def wait_until(vm: VM, done: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if not vm.alive() or time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s\n{vm.failure_report(200)}")
        time.sleep(1)


def test_an_unreachable_control_plane_is_waited_for_and_ready_follows(
    vm_launcher: VMLauncher, vm_plane: HostPlane, vm_figures: FigureBook
) -> None:
    created = vm_plane.create_node(node_id=f"vmt-down-{secrets.token_hex(3)}", **BARE)
    forward, relay = vm_plane.forward()
    wheelhouse = load_manifest(vm_plane.settings.artifacts_path).wheelhouse.file

    def after_the_install(name: str) -> None:
        # the install has all it fetches: the control plane goes away before the first start
        if name == wheelhouse:
            relay.down()

    vm_plane.watch.on_served.append(after_the_install)
    try:
        with vm_launcher.boot(
            created.user_data, label="unreachable", guest_forwards=[forward]
        ) as vm:
            node = BootedNode(vm, vm_plane, created, relay, "unreachable")
            wait_until(vm, lambda: bool(relay.log.refused_at), "a bootstrap attempt", READY_SECONDS)
            start_timeout = seconds_of(node.unit("TimeoutStartUSec")["TimeoutStartUSec"])
            outage = start_timeout + PAST_START_TIMEOUT_S
            first = relay.log.refused_at[0]
            wait_until(vm, lambda: time.monotonic() - first > outage, "the outage", outage + 60)
            waiting = node.unit("ActiveState", "SubState", "NRestarts", "StatusText")
            journal = node.journal()
            attempts = len(relay.log.refused_at)
            unready_while_down = node.ready_at() is None
            relay.up()
            back = time.monotonic()
            ready = node.wait_ready()
            run, now = "unreachable", time.monotonic()
            vm_figures.add(run, "outage at the first start", back - first, "s")
            vm_figures.add(run, "bootstrap attempts refused", float(attempts))
            vm_figures.add(run, "control plane back to ready", now - back, "s")
            node.record_boot(ready, vm_figures)
            after = node.unit("ActiveState", "NRestarts")
    finally:
        vm_plane.watch.on_served.remove(after_the_install)
    # past TimeoutStartSec, still starting: the daemon's EXTEND_TIMEOUT_USEC kept systemd waiting
    assert (waiting["ActiveState"], waiting["SubState"], waiting["NRestarts"]) == (
        "activating",
        "start",
        "0",
    ), waiting
    assert "bootstrap: waiting for the control plane" in waiting["StatusText"], waiting
    assert unready_while_down
    retries = [line for line in journal.splitlines() if RETRY_LINE in line]
    assert attempts >= 3 and len(retries) >= 3, journal
    delays = [line.rsplit("next in ", 1)[1] for line in retries]
    assert len(set(delays)) > 1, delays  # backing off, not a fixed beat
    assert after == {"ActiveState": "active", "NRestarts": "0"}, after


def corrupted_copy(source: Path, into: Path) -> Path:
    """The manifest and a copy of the wheelhouse; returns the copy (to corrupt later)."""
    into.mkdir()
    shutil.copy2(source / MANIFEST_NAME, into / MANIFEST_NAME)
    name = load_manifest(source).wheelhouse.file
    shutil.copy2(source / name, into / name)
    return into / name


def flip_a_byte(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 0xFF]))


def test_an_artifact_whose_hash_differs_stops_the_boot_before_anything_runs(
    vm_launcher: VMLauncher, vm_portal: BlockingPortal, vm_plane: HostPlane, tmp_path: Path
) -> None:
    # a control plane of its own, serving a copy of the artifacts, so the others stay whole
    wheelhouse = corrupted_copy(vm_plane.settings.artifacts_path, tmp_path / "artifacts")
    with host_plane(vm_portal, tmp_path / "state", wheelhouse.parent, vm_plane.tls) as plane:
        created = plane.create_node(node_id=f"vmt-hash-{secrets.token_hex(3)}", **BARE)
        flip_a_byte(wheelhouse)  # after the user-data named its hash
        forward, _ = plane.forward()
        with vm_launcher.boot(
            created.user_data, label="hash-mismatch", guest_forwards=[forward]
        ) as vm:
            status = vm.wait_cloud_init()
            timings = parse_timings(vm.read_text(TIMINGS_FILE))
            output = vm.read_text("/var/log/cloud-init-output.log")
            enabled = vm.run(["systemctl", "is-enabled", UNIT]).stdout.strip()
            active = vm.run(["systemctl", "is-active", UNIT]).stdout.strip()
            installed = vm.run(["ls", "-A", "/opt"]).stdout.split()
            leftovers = vm.sh("find /var/lib/vm-agent-install -type f").stdout
        provisioning = plane.http.get(
            f"/api/nodes/{created.node_id}/provisioning", headers=plane.admin()
        ).json()
    assert status.exit_code != 0 and "status: error" in status.stdout, status.describe()
    # the steps before it (packages: git is already in the image) ran; vm-agent is the last
    assert [t.step for t in timings] == ["packages", "vm-agent"], timings
    assert timings[-1].seconds is None and timings[0].seconds is not None, timings
    assert "has sha256" in output and "refused, nothing of it installed" in output, output[-3000:]
    assert "step vm-agent failed; the steps after it did not run" in output
    assert (enabled, active) == ("disabled", "inactive")
    assert "vm-agent" not in installed, installed
    assert leftovers == "", leftovers
    assert provisioning.get("bootstrapped_at") is None, provisioning
