"""qemu's command line for one VM, as data (pure: no files touched, no ports bound).

The guest sees nothing but what is forwarded: user networking with `restrict=on`,
`hostfwd` from the host's 127.0.0.1 into the guest, and `guestfwd` from an address inside
the guest's network to a port on the host's loopback (one socat per connection).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# the address inside the guest's user network that guest forwards listen on
GUEST_FORWARD_ADDRESS = "10.0.2.100"
GUEST_AGENT_PORT_NAME = "org.qemu.guest_agent.0"
KERNEL_COMMAND_LINE = "root=/dev/vda rw console=ttyS0 panic=-1"
QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class HostForward:
    """127.0.0.1:host_port on the host reaches guest_port in the guest."""

    host_port: int
    guest_port: int


@dataclass(frozen=True)
class GuestForward:
    """GUEST_FORWARD_ADDRESS:guest_port in the guest reaches 127.0.0.1:host_port on the host."""

    guest_port: int
    host_port: int


@dataclass(frozen=True)
class QemuSpec:
    """One VM. ``kernel`` None: the disk boots itself. ``agent_socket`` None: no guest
    agent channel. ``snapshot``: writes are thrown away (the harness); the product gives
    each VM a copy-on-write overlay instead. ``pidfile`` set: qemu detaches
    (``-daemonize``) once the guest is set up and writes its pid there."""

    kernel: Path | None
    initrd: Path | None
    rootfs: Path
    seed: Path
    console_log: Path
    agent_socket: Path | None
    accel: str = "tcg"
    cpus: int = 2
    memory_mb: int = 2048
    host_forwards: tuple[HostForward, ...] = ()
    guest_forwards: tuple[GuestForward, ...] = field(default=())
    append: str = KERNEL_COMMAND_LINE
    rootfs_format: str = "raw"
    snapshot: bool = True
    pidfile: Path | None = None
    name: str | None = None


def _escape(value: str) -> str:
    """qemu's option syntax: a comma inside a value is written twice."""
    return value.replace(",", ",,")


def netdev(spec: QemuSpec) -> str:
    parts = ["user", "id=net0", "restrict=on"]
    parts += [f"hostfwd=tcp:127.0.0.1:{f.host_port}-:{f.guest_port}" for f in spec.host_forwards]
    parts += [
        f"guestfwd=tcp:{GUEST_FORWARD_ADDRESS}:{f.guest_port}"
        f"-cmd:socat - TCP:127.0.0.1:{f.host_port}"
        for f in spec.guest_forwards
    ]
    return ",".join(parts)


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    if accel == "tcg":
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]
    raise ValueError(f"unknown accelerator {accel!r} (kvm or tcg)")


# What serves /dev/kvm. `pvm`: the kvm_pvm module (Pagetable-based Virtual Machine), which
# lets a machine without VMX/SVM (a Firecracker VM, as ours are) offer /dev/kvm. It runs a
# PVM-enabled guest kernel at speed; a stock kernel (Debian's) runs at CPL 0 and is
# emulated: measured ~0.1 MB/s through its own decompressor, where TCG is done in 4 s, so
# it prints nothing for minutes (docs/control-plane.md, "The qemu driver").
KvmKind = Literal["none", "hardware", "pvm"]
KVM_NOT_USED: dict[KvmKind, str] = {
    "none": "/dev/kvm does not open",
    "pvm": "/dev/kvm is kvm_pvm (no VMX/SVM): a stock guest kernel runs emulated, slower than TCG",
}


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU's feature flags: /proc/cpuinfo's first `flags` line."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def kvm_kind(dev_kvm_opens: bool, flags: Iterable[str], modules: Iterable[str]) -> KvmKind:
    """What /dev/kvm is, from whether it opens, the CPU's flags and /sys/module's names.
    PVM only when no hardware virtualization is there to serve it instead."""
    if not dev_kvm_opens:
        return "none"
    if "kvm_pvm" in set(modules) and not {"vmx", "svm"} & set(flags):
        return "pvm"
    return "hardware"


def _boot(spec: QemuSpec) -> list[str]:
    if spec.kernel is None:
        return []
    argv = ["-kernel", str(spec.kernel)]
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    return [*argv, "-append", spec.append]


def _root_drive(spec: QemuSpec) -> str:
    drive = f"file={_escape(str(spec.rootfs))},format={spec.rootfs_format},if=virtio"
    return drive + (",snapshot=on" if spec.snapshot else "")


def _guest_agent(spec: QemuSpec) -> list[str]:
    if spec.agent_socket is None:
        return []
    return [
        "-chardev",
        f"socket,id=qga0,path={_escape(str(spec.agent_socket))},server=on,wait=off",
        "-device",
        "virtio-serial-pci,id=vser0",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=qga0,name={GUEST_AGENT_PORT_NAME}",
    ]


def _detach(spec: QemuSpec) -> list[str]:
    named = [] if spec.name is None else ["-name", _escape(spec.name)]
    if spec.pidfile is None:
        return named
    return [*named, "-daemonize", "-pidfile", str(spec.pidfile)]


def qemu_argv(spec: QemuSpec) -> list[str]:
    return [
        QEMU,
        *accel_args(spec.accel),
        "-smp",
        str(spec.cpus),
        "-m",
        str(spec.memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-monitor",
        "none",
        # a kernel panic (panic=-1 reboots) ends qemu instead of looping
        "-no-reboot",
        *_boot(spec),
        # root first (vda), the NoCloud seed second (vdb)
        "-drive",
        _root_drive(spec),
        "-drive",
        f"file={_escape(str(spec.seed))},format=raw,if=virtio,readonly=on",
        "-netdev",
        netdev(spec),
        "-device",
        "virtio-net-pci,netdev=net0",
        "-chardev",
        f"file,id=console0,path={_escape(str(spec.console_log))}",
        "-serial",
        "chardev:console0",
        *_guest_agent(spec),
        "-device",
        "virtio-rng-pci",
        *_detach(spec),
    ]
