"""What a qemu VM's directory holds and what it says, decided without I/O.

A VM is a directory under the state directory, named by its provider id: its labels
(written first, so a create cut short is still found by them and owned), its record (the
viewer's host port, the accelerator), the copy-on-write disk, the NoCloud seed, qemu's
pidfile and logs. A pid is that VM's qemu only if its command line is qemu's and names
that VM's pidfile: a pid recycled by another process is never killed.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath

from control_plane.demand.capacity import PROVIDER_CAPACITY

LABELS = "labels.json"
RECORD = "vm.json"
PIDFILE = "qemu.pid"
DISK = "disk.qcow2"
SEED = "seed.img"
CONSOLE = "console.log"
QEMU_LOG = "qemu.log"
GUEST_AGENT = "qga.sock"  # with `guest_agent` on: qemu-guest-agent's channel
# a provider id is a directory name: no separators, no dot first (hidden: being removed)
_VM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def valid_vm_id(vm_id: str) -> bool:
    return bool(_VM_ID.fullmatch(vm_id)) and ".." not in vm_id


def vm_id_for(name: str, suffix: str) -> str:
    """A fresh provider id from the VM's name: a create sent twice makes two ids."""
    base = _NAME.sub("-", name).strip("-.")[:80] or "vm"
    vm_id = f"{base}-{suffix}"
    if not valid_vm_id(vm_id):
        raise ValueError(f"no valid VM id from {name!r}")
    return vm_id


def labels_match(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    """Every wanted label is carried with that value (what Hetzner's selector does)."""
    return all(have.get(key) == value for key, value in want.items())


def parse_labels(text: str) -> dict[str, str] | None:
    """The labels file, or None when it is not a JSON object of strings."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return None
    return data


@dataclass(frozen=True)
class VmRecord:
    viewer_host_port: int | None
    accel: str | None
    created_at: float | None

    def dumps(self) -> str:
        return json.dumps(
            {"viewer_host_port": self.viewer_host_port, "accel": self.accel,
             "created_at": self.created_at}
        )  # fmt: skip


def parse_record(text: str) -> VmRecord:
    """The record, with what it lacks as None (a create cut short wrote none yet)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    port, accel, created = (data.get(k) for k in ("viewer_host_port", "accel", "created_at"))
    return VmRecord(
        port if isinstance(port, int) and 0 < port < 65536 else None,
        accel if isinstance(accel, str) else None,
        float(created) if isinstance(created, int | float) else None,
    )


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data (JSON is YAML): a new instance-id makes cloud-init's first boot."""
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}) + "\n"


def parse_pid(text: str) -> int | None:
    value = text.strip()
    return int(value) if value.isdigit() and 1 < int(value) < 2**22 else None


def is_qemu_of(cmdline: bytes, pidfile: PurePath) -> bool:
    """Whether /proc/<pid>/cmdline is qemu's, started for the VM whose pidfile is this."""
    argv = [part.decode(errors="replace") for part in cmdline.split(b"\0")]
    if not argv or not PurePath(argv[0]).name.startswith("qemu-system-"):
        return False
    return any(a == "-pidfile" and b == str(pidfile) for a, b in itertools.pairwise(argv))


def accelerators(setting: str, kvm_usable: bool, kvm_failed: bool) -> list[str]:
    """The accelerators a create tries, in order. `auto`: KVM when /dev/kvm opens and KVM
    has not failed this driver before, then TCG."""
    if setting == "auto":
        return ["kvm", "tcg"] if kvm_usable and not kvm_failed else ["tcg"]
    if setting in ("kvm", "tcg"):
        return [setting]
    raise ValueError(f"unknown accelerator {setting!r} (auto, kvm or tcg)")


def kernel_started(console: bytes) -> bool:
    """The kernel's first line on the serial console: the accelerator runs the guest."""
    return b"Linux version" in console


def room(size: str) -> tuple[int, int]:
    """(vCPUs, memory in MB) for one of our sizes: the capacity map's `qemu` row."""
    try:
        cap = PROVIDER_CAPACITY["qemu"][size]
    except KeyError:
        raise ValueError(f"no qemu size {size!r}") from None
    return cap.vcpu, cap.memory_mb


def vm_dir(state_dir: Path, vm_id: str) -> Path:
    if not valid_vm_id(vm_id):
        raise ValueError(f"not a VM id: {vm_id!r}")
    return state_dir / vm_id
