"""qemu's command line for one run, as data (pure: no files touched, no ports bound).

The guest sees nothing but what is forwarded: user networking with `restrict=on`,
`hostfwd` from the host's 127.0.0.1 into the guest, and `guestfwd` from an address inside
the guest's network to a port on the host's loopback (one socat per connection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# the address inside the guest's user network that guest forwards listen on
GUEST_FORWARD_ADDRESS = "10.0.2.100"
GUEST_AGENT_PORT_NAME = "org.qemu.guest_agent.0"
KERNEL_COMMAND_LINE = "root=/dev/vda rw console=ttyS0 panic=-1"


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
    kernel: Path
    initrd: Path
    rootfs: Path
    seed: Path
    console_log: Path
    agent_socket: Path
    accel: str = "tcg"
    cpus: int = 2
    memory_mb: int = 2048
    host_forwards: tuple[HostForward, ...] = ()
    guest_forwards: tuple[GuestForward, ...] = field(default=())
    append: str = KERNEL_COMMAND_LINE


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


def qemu_argv(spec: QemuSpec) -> list[str]:
    return [
        "qemu-system-x86_64",
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
        "-kernel",
        str(spec.kernel),
        "-initrd",
        str(spec.initrd),
        "-append",
        spec.append,
        # root first (vda), the NoCloud seed second (vdb); every run starts from the image
        "-drive",
        f"file={_escape(str(spec.rootfs))},format=raw,if=virtio,snapshot=on",
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
        "-chardev",
        f"socket,id=qga0,path={_escape(str(spec.agent_socket))},server=on,wait=off",
        "-device",
        "virtio-serial-pci,id=vser0",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=qga0,name={GUEST_AGENT_PORT_NAME}",
        "-device",
        "virtio-rng-pci",
    ]
