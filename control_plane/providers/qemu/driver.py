"""The `qemu` driver: each VM a detached qemu on this machine, its state in a directory.

qemu runs with `-daemonize` and a pidfile rather than as our child or a transient systemd
unit: a replica's restart (or crash) must not take its VMs along, it needs no systemd on
the host (containers, `make dev`), and the pidfile plus /proc/<pid>/cmdline is all a later
replica needs to find, check and kill it. The disk is a qcow2 overlay of the configured
base image (the base is never written), the user-data reaches cloud-init in a NoCloud
seed, and the guest's network is `restrict=on` user networking: one host forward from a
free loopback port to the daemon's viewer port, and the guest forwards the settings list
(the control plane, and whatever else the guests need) to ports on the host's loopback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud_init.params import DEFAULT_PORT
from control_plane.demand.capacity import PROVIDER_CAPACITY
from control_plane.providers.base import NODE_LABEL, ProviderError, Vm, VmSpec, VmStatus
from control_plane.providers.qemu import vmdir
from control_plane.providers.qemu.command import (
    KERNEL_COMMAND_LINE,
    KVM_NOT_USED,
    GuestForward,
    HostForward,
    KvmKind,
    QemuSpec,
    cpu_flags,
    kvm_kind,
    qemu_argv,
)

log = logging.getLogger("control_plane.providers.qemu")
PORT_ATTEMPTS = 3
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
_PORT_TAKEN = re.compile(r"host forwarding rule|Could not set up host forwarding", re.I)


class QemuSettings(BaseSettings):
    """CONTROL_PLANE_QEMU_* variables (docs/control-plane.md). No credential: the VMs run
    on the operator's own machine; the driver is offered only once `IMAGE` is set."""

    model_config = SettingsConfigDict(env_prefix="CONTROL_PLANE_QEMU_", extra="ignore")

    state_dir: Path = Path("/var/lib/vm-agent-control-plane/qemu")
    image: Path | None = None  # the base root disk; each VM writes to its own overlay
    image_format: Literal["raw", "qcow2"] = "raw"
    kernel: Path | None = None  # direct boot (with `initrd`); None: the disk boots itself
    initrd: Path | None = None
    append: str = KERNEL_COMMAND_LINE
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    kvm_probe_s: float = 15.0  # `auto`: a KVM guest whose kernel printed nothing by then: TCG
    viewer_port: int = DEFAULT_PORT  # the daemon's port in the guest
    # guest port on 10.0.2.100 -> a port on the host's 127.0.0.1 (the control plane's)
    guest_forwards: dict[int, int] = {}
    start_timeout_s: float = 60.0
    # a qemu-guest-agent channel at <VM dir>/qga.sock (root's: the directory is 0700), for
    # an operator's look inside a node and the VM test's checks; the guest runs the agent
    guest_agent: bool = False

    @property
    def configured(self) -> bool:
        return self.image is not None


def free_port() -> int:
    """A port free on 127.0.0.1 now (qemu binds it at once, or the start is retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def host_kvm(
    dev: Path = Path("/dev/kvm"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
    sys_module: Path = Path("/sys/module"),
) -> KvmKind:
    """What serves /dev/kvm on this host (command.kvm_kind decides; this reads)."""
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return "none"
    os.close(fd)
    try:
        flags = cpu_flags(cpuinfo.read_text(errors="replace"))
    except OSError:
        flags = frozenset()
    try:
        modules = os.listdir(sys_module)
    except OSError:
        modules = []
    return kvm_kind(True, flags, modules)


def kvm_usable() -> bool:
    """`auto` tries KVM only where hardware virtualization serves it (not PVM)."""
    kind = host_kvm()
    if kind != "hardware":
        log.info("qemu: KVM not tried: %s", KVM_NOT_USED[kind])
    return kind == "hardware"


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except FileNotFoundError:
        return ""


def _write_private(path: Path, text: str) -> None:
    """Written whole or not at all, readable by its owner only (a rename into place)."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    partial.rename(path)


class QemuProvider:
    name = "qemu"

    def __init__(
        self,
        settings: QemuSettings,
        *,
        clock: Callable[[], float] = time.time,
        kvm: Callable[[], bool] = kvm_usable,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._kvm = kvm
        self._lock = threading.Lock()
        self.kvm_failed = False  # `auto` tried KVM and its guest never started

    # the interface

    def create(self, spec: VmSpec) -> Vm:
        s = self.settings
        if s.image is None:
            raise ProviderError("qemu: no base image (CONTROL_PLANE_QEMU_IMAGE)", transient=False)
        try:
            cpus, memory_mb = vmdir.room(spec.size)
        except ValueError as exc:
            raise ProviderError(f"qemu: {exc}", transient=False, applied=False) from None
        vm_id = vmdir.vm_id_for(spec.name, secrets.token_hex(4))
        directory = vmdir.vm_dir(s.state_dir, vm_id)
        socket_path = len(os.fsencode(directory / vmdir.GUEST_AGENT))
        if s.guest_agent and socket_path > MAX_SOCKET_PATH:
            why = f"the guest agent's socket path is {socket_path} bytes, past {MAX_SOCKET_PATH}"
            raise ProviderError(f"qemu: {why}: a shorter STATE_DIR", transient=False, applied=False)
        s.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.mkdir(mode=0o700)
        # the labels first: from here on a create cut short is found by them, and owned
        _write_private(directory / vmdir.LABELS, json.dumps(dict(spec.labels)))
        try:
            self._overlay(directory, s.image, PROVIDER_CAPACITY["qemu"][spec.size].disk_gb)
            hostname = spec.labels.get(NODE_LABEL) or vm_id
            self._seed(directory, spec.user_data, vmdir.meta_data(vm_id, hostname))
            accel, port = self._start(directory, vm_id, cpus, memory_mb)
        except ProviderError:
            self._remove(directory)
            raise
        except (OSError, subprocess.SubprocessError) as exc:
            self._remove(directory)
            raise ProviderError(f"qemu create: {exc}", transient=True, applied=False) from exc
        record = vmdir.VmRecord(port, accel, self._clock())
        _write_private(directory / vmdir.RECORD, record.dumps())
        log.info("qemu VM %s started (%s), viewer on 127.0.0.1:%d", vm_id, accel, port)
        return self._vm(directory, dict(spec.labels))

    def delete(self, provider_id: str) -> None:
        if not vmdir.valid_vm_id(provider_id):
            raise ProviderError(f"qemu: not a VM id: {provider_id!r}", transient=False)
        directory = self.settings.state_dir / provider_id
        if not directory.is_dir():
            return  # gone already
        with self._lock:
            self._kill(directory)
            self._remove(directory)

    def list(self, labels: Mapping[str, str]) -> list[Vm]:
        try:
            entries = sorted(self.settings.state_dir.iterdir())
        except FileNotFoundError:
            return []
        found = []
        for directory in entries:
            if not vmdir.valid_vm_id(directory.name) or not directory.is_dir():
                continue
            have = self._labels(directory)
            if have is not None and vmdir.labels_match(have, labels):
                found.append(self._vm(directory, have))
        return found

    def get(self, provider_id: str) -> Vm | None:
        if not vmdir.valid_vm_id(provider_id):
            return None
        directory = self.settings.state_dir / provider_id
        if not directory.is_dir():
            return None
        return self._vm(directory, self._labels(directory) or {})

    # what a VM's directory says

    def _labels(self, directory: Path) -> dict[str, str] | None:
        try:
            return vmdir.parse_labels((directory / vmdir.LABELS).read_text())
        except OSError:
            return None

    def running_pid(self, directory: Path) -> int | None:
        """The pid of this VM's qemu if it runs; never another process's recycled pid."""
        try:
            pid = vmdir.parse_pid((directory / vmdir.PIDFILE).read_text())
            if pid is None:
                return None
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if vmdir.is_qemu_of(cmdline, directory / vmdir.PIDFILE) else None

    def _vm(self, directory: Path, labels: dict[str, str]) -> Vm:
        try:
            record = vmdir.parse_record((directory / vmdir.RECORD).read_text())
        except OSError:
            record = vmdir.parse_record("")
        running = self.running_pid(directory) is not None
        return Vm(
            provider_id=directory.name,
            name=directory.name,
            status=VmStatus.RUNNING if running else VmStatus.STOPPED,
            labels=labels,
            address="127.0.0.1" if record.viewer_host_port else None,
            viewer_port=record.viewer_host_port,
        )

    # carrying it out

    def _overlay(self, directory: Path, image: Path, disk_gb: int) -> None:
        argv = [
            "qemu-img", "create", "-q", "-f", "qcow2",
            "-b", str(image.resolve()), "-F", self.settings.image_format,
            str(directory / vmdir.DISK), f"{disk_gb}G",
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise ProviderError(f"qemu-img: {done.stderr.strip()[-500:]}", transient=False)

    def _seed(self, directory: Path, user_data: str, meta_data: str) -> None:
        # the user-data holds a bootstrap token: only in the 0600 seed once it is made
        _write_private(directory / "user-data", user_data)
        _write_private(directory / "meta-data", meta_data)
        seed = directory / vmdir.SEED
        argv = [
            "cloud-localds",
            str(seed),
            str(directory / "user-data"),
            str(directory / "meta-data"),
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        finally:
            (directory / "user-data").unlink(missing_ok=True)
        if done.returncode != 0:
            raise ProviderError(f"cloud-localds: {done.stderr.strip()[-500:]}", transient=False)
        seed.chmod(0o600)

    def _spec(self, directory: Path, vm_id: str, accel: str, *, cpus: int, mem: int) -> QemuSpec:
        """Without the viewer's host port yet: `_launch` picks a free one for each try."""
        s = self.settings
        assert s.image is not None
        return QemuSpec(
            kernel=s.kernel,
            initrd=s.initrd,
            rootfs=directory / vmdir.DISK,
            seed=directory / vmdir.SEED,
            console_log=directory / vmdir.CONSOLE,
            agent_socket=directory / vmdir.GUEST_AGENT if s.guest_agent else None,
            accel=accel,
            cpus=cpus,
            memory_mb=mem,
            guest_forwards=tuple(GuestForward(g, h) for g, h in sorted(s.guest_forwards.items())),
            append=s.append,
            rootfs_format="qcow2",
            snapshot=False,
            pidfile=directory / vmdir.PIDFILE,
            name=vm_id,
        )

    def _start(self, directory: Path, vm_id: str, cpus: int, mem: int) -> tuple[str, int]:
        """qemu started and detached: (the accelerator, the viewer's host port)."""
        tried = vmdir.accelerators(self.settings.accel, self._kvm(), self.kvm_failed)
        for accel in tried:
            fallback = accel == "kvm" and accel != tried[-1]
            try:
                port = self._launch(
                    directory, self._spec(directory, vm_id, accel, cpus=cpus, mem=mem)
                )
            except ProviderError as exc:
                if not fallback:
                    raise
                why = str(exc)
            else:
                if not fallback or self._kernel_starts(directory):
                    return accel, port
                why = f"no kernel output in {self.settings.kvm_probe_s:.0f} s"
                self._kill(directory)
            log.warning("qemu: KVM does not run guests here (%s): TCG from now on", why)
            self.kvm_failed = True
            (directory / vmdir.CONSOLE).unlink(missing_ok=True)
        raise AssertionError("the last accelerator always returns")  # pragma: no cover

    def _launch(self, directory: Path, spec: QemuSpec) -> int:
        qemu_log = directory / vmdir.QEMU_LOG
        for _ in range(PORT_ATTEMPTS):
            forward = HostForward(free_port(), self.settings.viewer_port)
            spec = replace(spec, host_forwards=(forward,))
            with qemu_log.open("ab") as out:
                # -daemonize: qemu returns once the guest is set up (or exits with why not)
                done = subprocess.run(
                    qemu_argv(spec), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    start_new_session=True, timeout=self.settings.start_timeout_s, check=False,
                )  # fmt: skip
            if done.returncode == 0:
                return forward.host_port
            if not _PORT_TAKEN.search(_tail(qemu_log)):
                raise ProviderError(f"qemu did not start: {_tail(qemu_log, 800)}", transient=False)
        raise ProviderError(f"qemu: no free loopback port in {PORT_ATTEMPTS} tries", transient=True)

    def _kernel_starts(self, directory: Path) -> bool:
        deadline = time.monotonic() + self.settings.kvm_probe_s
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if vmdir.kernel_started((directory / vmdir.CONSOLE).read_bytes()):
                    return True
            if self.running_pid(directory) is None:
                return False
            time.sleep(0.2)
        return False

    def _kill(self, directory: Path) -> None:
        pid = self.running_pid(directory)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.running_pid(directory) is not None:  # a zombie's cmdline is empty
            if time.monotonic() > deadline:
                raise ProviderError(f"qemu {pid} outlived SIGKILL", transient=True)
            time.sleep(0.05)

    def _remove(self, directory: Path) -> None:
        # out of sight first (list skips dot-names), so no listing sees half a directory
        hidden = directory.with_name(f".gone-{directory.name}-{secrets.token_hex(3)}")
        with contextlib.suppress(FileNotFoundError):
            directory.rename(hidden)
        shutil.rmtree(hidden, ignore_errors=True)
