"""The qemu driver for real: qemu-img, cloud-localds and qemu-system-x86_64 run, a detached
qemu is started, listed, found dead, and deleted, with no guest booted (the base disk is a
blank file, so the firmware finds nothing to boot and the VM idles). Slow: `make test-slow`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.providers.base import ProviderError, VmSpec, VmStatus, node_labels
from control_plane.providers.qemu import vmdir
from control_plane.providers.qemu.driver import QemuProvider, QemuSettings
from tests.capabilities import missing

pytestmark = [pytest.mark.slow, pytest.mark.integration]
TOOLS = ("qemu-system-x86_64", "qemu-img", "cloud-localds")
USER_DATA = "#cloud-config\nbootcmd: [echo qemu-driver-test-user-data]\n"


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[QemuProvider]:
    absent = [t for t in TOOLS if shutil.which(t) is None]
    if absent:
        debian = "qemu-system-x86, qemu-utils, cloud-image-utils"
        missing(f"the qemu driver needs {', '.join(absent)} (Debian: {debian})")
    base = tmp_path / "base.img"
    with base.open("wb") as f:
        f.truncate(1 << 20)
    settings = QemuSettings(
        state_dir=tmp_path / "vms", image=base, accel="tcg", guest_forwards={8700: 1}
    )
    provider = QemuProvider(settings)
    try:
        yield provider
    finally:  # no qemu outlives its test
        for vm in provider.list({}):
            provider.delete(vm.provider_id)


def spec(node: str = "n1") -> VmSpec:
    return VmSpec(
        name=f"vm-agent-{node}",
        size="small",
        region=None,
        image="ignored",
        user_data=USER_DATA,
        labels=node_labels("cp-test", node),
    )


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_create_starts_a_detached_qemu_behind_its_loopback_forward(qemu: QemuProvider) -> None:
    vm = qemu.create(spec())
    directory = qemu.settings.state_dir / vm.provider_id
    pid = qemu.running_pid(directory)
    assert pid is not None and vm.status is VmStatus.RUNNING
    # detached: not our child, a session of its own (a replica's restart leaves it)
    assert os.getsid(pid) != os.getsid(0)
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()
    argv = cmdline(pid)
    assert "restrict=on" in argv[argv.index("-netdev") + 1]
    assert "virtio-serial-pci,id=vser0" not in argv  # no guest agent channel unless asked
    assert (
        "guestfwd=tcp:10.0.2.100:8700-cmd:socat - TCP:127.0.0.1:1"
        in argv[argv.index("-netdev") + 1]
    )
    # the dispatcher's way in: a loopback port qemu listens on, forwarded to the daemon's
    assert vm.address == "127.0.0.1" and vm.viewer_port is not None
    assert vm.viewer_url(8080) == f"wss://127.0.0.1:{vm.viewer_port}/v1/ws"
    with socket.create_connection(("127.0.0.1", vm.viewer_port), timeout=10):
        pass
    assert qemu.get(vm.provider_id) == vm
    assert qemu.list(node_labels("cp-test", "n1")) == [vm]


def test_the_vm_directory_is_private_and_the_user_data_only_in_the_seed(
    qemu: QemuProvider,
) -> None:
    vm = qemu.create(spec())
    directory = qemu.settings.state_dir / vm.provider_id
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / vmdir.SEED).stat().st_mode) == 0o600
    assert not (directory / "user-data").exists()  # it holds a bootstrap token
    assert USER_DATA.encode() in (directory / vmdir.SEED).read_bytes()
    assert vmdir.parse_labels((directory / vmdir.LABELS).read_text()) == node_labels(
        "cp-test", "n1"
    )
    info = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(directory / vmdir.DISK)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(qemu.settings.image) in info and '"virtual-size": 21474836480' in info


def test_list_is_by_label_and_delete_leaves_nothing(qemu: QemuProvider) -> None:
    one = qemu.create(spec("n1"))
    two = qemu.create(spec("n2"))
    assert [v.provider_id for v in qemu.list(node_labels("cp-test", "n2"))] == [two.provider_id]
    assert len(qemu.list({"vm-agent/plane": "cp-test"})) == 2
    assert qemu.list({"vm-agent/plane": "cp-other"}) == []
    pid = qemu.running_pid(qemu.settings.state_dir / one.provider_id)
    assert pid is not None
    qemu.delete(one.provider_id)
    assert not Path(f"/proc/{pid}/cmdline").exists() or cmdline(pid) == [""]
    assert not (qemu.settings.state_dir / one.provider_id).exists()
    assert qemu.get(one.provider_id) is None
    qemu.delete(one.provider_id)  # idempotent
    assert [v.provider_id for v in qemu.list({})] == [two.provider_id]


def test_a_dead_qemu_is_listed_stopped_and_still_deleted(qemu: QemuProvider) -> None:
    vm = qemu.create(spec())
    directory = qemu.settings.state_dir / vm.provider_id
    pid = qemu.running_pid(directory)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while qemu.running_pid(directory) is not None:
        pass  # bounded by the test's timeout: a killed process goes
    assert [v.status for v in qemu.list({})] == [VmStatus.STOPPED]
    qemu.delete(vm.provider_id)
    assert qemu.list({}) == []


def test_a_recycled_pid_is_never_killed(qemu: QemuProvider) -> None:
    """The pidfile names a pid that is now another program's: the VM is stopped, and
    deleting it removes the directory but leaves that program alone."""
    vm = qemu.create(spec())
    directory = qemu.settings.state_dir / vm.provider_id
    pid = qemu.running_pid(directory)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    other = subprocess.Popen([*sleeper, "-pidfile", str(directory / vmdir.PIDFILE)])
    try:
        (directory / vmdir.PIDFILE).write_text(f"{other.pid}\n")
        assert qemu.get(vm.provider_id).status is VmStatus.STOPPED  # type: ignore[union-attr]
        qemu.delete(vm.provider_id)
        assert other.poll() is None
        assert not directory.exists()
    finally:
        other.kill()
        other.wait()


def test_a_create_that_fails_leaves_nothing(qemu: QemuProvider, tmp_path: Path) -> None:
    broken = QemuProvider(qemu.settings.model_copy(update={"image": tmp_path / "absent.img"}))
    with pytest.raises(ProviderError) as raised:
        broken.create(spec())
    assert raised.value.transient is False
    assert list(qemu.settings.state_dir.iterdir()) == []
    with pytest.raises(ProviderError, match="no qemu size"):
        broken.create(VmSpec("n", "huge", None, "", USER_DATA, {}))


def test_delete_refuses_an_id_that_is_not_a_vm_directory(qemu: QemuProvider) -> None:
    with pytest.raises(ProviderError, match="not a VM id"):
        qemu.delete("../vms")
    assert qemu.get("../vms") is None


def test_auto_falls_back_to_tcg_when_a_kvm_guest_never_starts(qemu: QemuProvider) -> None:
    """No kernel prints on a blank disk, so the KVM probe fails on any machine: the VM is
    started again under TCG, and the driver goes straight to TCG from then on."""
    auto = QemuProvider(
        qemu.settings.model_copy(update={"accel": "auto", "kvm_probe_s": 2.0}), kvm=lambda: True
    )
    vm = auto.create(spec())
    directory = auto.settings.state_dir / vm.provider_id
    record = vmdir.parse_record((directory / vmdir.RECORD).read_text())
    assert record.accel == "tcg" and auto.kvm_failed
    pid = auto.running_pid(directory)
    assert pid is not None and cmdline(pid)[1:3] == ["-accel", "tcg,thread=multi"]
    # only one qemu for the VM: the KVM one was killed
    qemus = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _names(p, directory)]
    assert [int(p.name) for p in qemus] == [pid]


def _names(proc: Path, directory: Path) -> bool:
    try:
        return str(directory / vmdir.PIDFILE).encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_a_guest_agent_channel_only_when_asked_and_only_in_the_private_directory() -> None:
    absent = [t for t in TOOLS if shutil.which(t) is None]
    if absent:
        missing(f"the qemu driver needs {', '.join(absent)}")
    # a short state directory: a unix socket's path holds at most 107 bytes
    short = Path(tempfile.mkdtemp(prefix="qd-", dir="/tmp"))
    try:
        base = short / "base.img"
        base.write_bytes(b"\0" * (1 << 20))
        settings = QemuSettings(state_dir=short / "vms", image=base, accel="tcg", guest_agent=True)
        provider = QemuProvider(settings)
        vm = provider.create(spec())
        directory = settings.state_dir / vm.provider_id
        sock = directory / vmdir.GUEST_AGENT
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700  # root's alone
        pid = provider.running_pid(directory)
        assert pid is not None and any(str(sock) in a for a in cmdline(pid))
        provider.delete(vm.provider_id)
        assert not directory.exists()
        # a state directory whose socket path would not fit: refused before anything is made
        deep = QemuSettings(state_dir=short / ("d" * 90), image=base, accel="tcg", guest_agent=True)
        with pytest.raises(ProviderError, match="socket path") as refused:
            QemuProvider(deep).create(spec())
        assert refused.value.applied is False and not deep.state_dir.exists()
    finally:
        shutil.rmtree(short, ignore_errors=True)
