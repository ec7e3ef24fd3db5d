"""The qemu driver's decisions, by tables: its command line (detached, a private overlay,
the forwards), VM ids, label matching, the pid check that never kills a recycled pid, the
accelerator (and what serves /dev/kvm: hardware or PVM), the room per size, and where the
dispatcher reaches a VM. No qemu runs here."""

from __future__ import annotations

import json
from pathlib import Path, PurePath

import pytest

from control_plane.providers.base import Vm, VmStatus
from control_plane.providers.qemu import vmdir
from control_plane.providers.qemu.command import (
    KVM_NOT_USED,
    GuestForward,
    HostForward,
    QemuSpec,
    cpu_flags,
    kvm_kind,
    qemu_argv,
)
from control_plane.providers.qemu.driver import host_kvm

PIDFILE = PurePath("/var/lib/q/vm-agent-n1-ab12cd34/qemu.pid")


def product_spec(**overrides: object) -> QemuSpec:
    fields: dict[str, object] = {
        "kernel": Path("/img/vmlinuz"),
        "initrd": Path("/img/initrd.img"),
        "rootfs": Path("/vms/v1/disk.qcow2"),
        "seed": Path("/vms/v1/seed.img"),
        "console_log": Path("/vms/v1/console.log"),
        "agent_socket": None,
        "rootfs_format": "qcow2",
        "snapshot": False,
        "pidfile": Path("/vms/v1/qemu.pid"),
        "name": "v1",
        "host_forwards": (HostForward(41000, 8080),),
        "guest_forwards": (GuestForward(8700, 42000),),
    }
    fields.update(overrides)
    return QemuSpec(**fields)  # type: ignore[arg-type]


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, value in enumerate(argv) if value == name]


def test_a_product_vm_detaches_with_its_pidfile_and_writes_only_its_overlay() -> None:
    argv = qemu_argv(product_spec())
    assert "-daemonize" in argv
    assert option(argv, "-pidfile") == ["/vms/v1/qemu.pid"]
    assert option(argv, "-drive")[0] == "file=/vms/v1/disk.qcow2,format=qcow2,if=virtio"
    assert option(argv, "-name") == ["v1"]
    # no guest agent channel: the product never drives the guest from the host
    assert not any("qga0" in a for a in option(argv, "-chardev"))
    netdev = option(argv, "-netdev")[0].split(",")
    assert netdev[:3] == ["user", "id=net0", "restrict=on"]
    assert "hostfwd=tcp:127.0.0.1:41000-:8080" in netdev


def test_without_a_kernel_the_disk_boots_itself() -> None:
    argv = qemu_argv(product_spec(kernel=None, initrd=None))
    assert not {"-kernel", "-initrd", "-append"} & set(argv)


def test_the_harness_spec_stays_a_snapshot_in_the_foreground() -> None:
    argv = qemu_argv(product_spec(snapshot=True, rootfs_format="raw", pidfile=None, name=None))
    assert "-daemonize" not in argv and "-pidfile" not in argv
    assert option(argv, "-drive")[0].endswith("format=raw,if=virtio,snapshot=on")


@pytest.mark.parametrize(
    ("vm_id", "valid"),
    [
        ("vm-agent-n1-ab12cd34", True),
        ("a", True),
        ("", False),
        ("../etc", False),
        ("a/b", False),
        (".gone-x", False),  # being removed: never listed
        ("a..b", False),
        ("-a", False),
        ("x" * 102, False),
        ("a b", False),
    ],
)
def test_vm_ids_are_plain_directory_names(vm_id: str, valid: bool) -> None:
    assert vmdir.valid_vm_id(vm_id) is valid


@pytest.mark.parametrize(
    ("name", "expected"),
    [("vm-agent-n1", "vm-agent-n1-ab12"), ("../../x", "x-ab12"), ("", "vm-ab12")],
)
def test_vm_ids_from_names(name: str, expected: str) -> None:
    assert vmdir.vm_id_for(name, "ab12") == expected


def test_a_vm_dir_outside_the_state_dir_is_refused() -> None:
    with pytest.raises(ValueError, match="not a VM id"):
        vmdir.vm_dir(Path("/s"), "../x")


@pytest.mark.parametrize(
    ("have", "want", "match"),
    [
        ({"a": "1", "b": "2"}, {"a": "1"}, True),
        ({"a": "1", "b": "2"}, {"a": "1", "b": "2"}, True),
        ({"a": "1"}, {}, True),
        ({"a": "1"}, {"a": "2"}, False),
        ({"a": "1"}, {"b": "1"}, False),
        ({}, {"a": "1"}, False),
    ],
)
def test_label_matching_wants_every_label(
    have: dict[str, str], want: dict[str, str], match: bool
) -> None:
    assert vmdir.labels_match(have, want) is match


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('{"a": "1"}', {"a": "1"}),
        ("{}", {}),
        ("[]", None),
        ('{"a": 1}', None),
        ("not json", None),
        ("", None),
    ],
)
def test_labels_file(text: str, parsed: dict[str, str] | None) -> None:
    assert vmdir.parse_labels(text) == parsed


@pytest.mark.parametrize(
    ("cmdline", "ours"),
    [
        (b"qemu-system-x86_64\0-m\0512\0-pidfile\0" + str(PIDFILE).encode() + b"\0", True),
        (b"/usr/bin/qemu-system-x86_64\0-pidfile\0" + str(PIDFILE).encode() + b"\0", True),
        # another VM's qemu
        (b"qemu-system-x86_64\0-pidfile\0/var/lib/q/other/qemu.pid\0", False),
        # a recycled pid: some other program, even one naming our pidfile
        (b"sleep\0-pidfile\0" + str(PIDFILE).encode() + b"\0", False),
        (b"python3\0qemu-system-x86_64\0-pidfile\0" + str(PIDFILE).encode(), False),
        # a zombie (or a kernel thread): no command line at all
        (b"", False),
        (b"qemu-system-x86_64\0" + str(PIDFILE).encode() + b"\0-pidfile\0", False),
    ],
)
def test_a_pid_is_killed_only_if_it_is_that_vms_qemu(cmdline: bytes, ours: bool) -> None:
    assert vmdir.is_qemu_of(cmdline, PIDFILE) is ours


@pytest.mark.parametrize(
    ("text", "pid"),
    [("1234\n", 1234), ("  77 ", 77), ("0", None), ("1", None), ("-5", None), ("x", None),
     ("", None), ("99999999", None)],
)  # fmt: skip
def test_pidfile(text: str, pid: int | None) -> None:
    assert vmdir.parse_pid(text) == pid


@pytest.mark.parametrize(
    ("setting", "kvm_usable", "kvm_failed", "tried"),
    [
        ("auto", True, False, ["kvm", "tcg"]),
        ("auto", True, True, ["tcg"]),
        ("auto", False, False, ["tcg"]),
        ("kvm", False, False, ["kvm"]),
        ("tcg", True, False, ["tcg"]),
    ],
)
def test_accelerators(setting: str, kvm_usable: bool, kvm_failed: bool, tried: list[str]) -> None:
    assert vmdir.accelerators(setting, kvm_usable, kvm_failed) == tried


def test_an_unknown_accelerator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown accelerator"):
        vmdir.accelerators("hvf", True, False)


@pytest.mark.parametrize(
    ("console", "started"),
    [(b"", False), (b"SeaBIOS\r\nBooting from ROM..\r\n", False),
     (b"[    0.000000] Linux version 6.1.0-28-amd64", True)],
)  # fmt: skip
def test_a_kvm_guest_counts_as_started_once_its_kernel_prints(
    console: bytes, started: bool
) -> None:
    assert vmdir.kernel_started(console) is started


@pytest.mark.parametrize(
    ("size", "room"), [("small", (2, 4096)), ("medium", (4, 8192)), ("large", (8, 16384))]
)
def test_room_per_size_is_the_capacity_maps(size: str, room: tuple[int, int]) -> None:
    assert vmdir.room(size) == room


def test_an_unknown_size_is_refused() -> None:
    with pytest.raises(ValueError, match="no qemu size"):
        vmdir.room("huge")


def test_meta_data_names_the_instance_and_host() -> None:
    assert json.loads(vmdir.meta_data("v1", "n1")) == {"instance-id": "v1", "local-hostname": "n1"}


@pytest.mark.parametrize(
    ("text", "record"),
    [
        ('{"viewer_host_port": 41000, "accel": "tcg", "created_at": 5}',
         vmdir.VmRecord(41000, "tcg", 5.0)),
        ('{"viewer_host_port": 70000}', vmdir.VmRecord(None, None, None)),
        ('{"viewer_host_port": "41000"}', vmdir.VmRecord(None, None, None)),
        ("", vmdir.VmRecord(None, None, None)),
        ("[1]", vmdir.VmRecord(None, None, None)),
    ],
)  # fmt: skip
def test_vm_record(text: str, record: vmdir.VmRecord) -> None:
    assert vmdir.parse_record(text) == record
    assert vmdir.parse_record(record.dumps()) == record


@pytest.mark.parametrize(
    ("address", "port", "url"),
    [
        ("127.0.0.1", 41000, "wss://127.0.0.1:41000/v1/ws"),  # qemu: its host forward
        ("203.0.113.7", None, "wss://203.0.113.7:8080/v1/ws"),  # a cloud: the daemon's port
        ("2001:db8::1", None, "wss://[2001:db8::1]:8080/v1/ws"),
        (None, None, None),
    ],
)
def test_where_the_dispatcher_reaches_a_vm(
    address: str | None, port: int | None, url: str | None
) -> None:
    vm = Vm("1", "n", VmStatus.RUNNING, address=address, viewer_port=port)
    assert vm.viewer_url(8080) == url


# this machine's /proc/cpuinfo, cut: no vmx, `hypervisor` (a Firecracker VM), kvm_pvm loaded
FIRECRACKER_CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
    "flags\t\t: fpu vme de pse tsc msr pae hypervisor avx512f arch_capabilities\n"
    "bugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: fpu vmx\n"
)


@pytest.mark.parametrize(
    ("cpuinfo", "flags"),
    [(FIRECRACKER_CPUINFO, {"fpu", "vme", "de", "pse", "tsc", "msr", "pae", "hypervisor",
                            "avx512f", "arch_capabilities"}),
     ("flags: vmx ept\n", {"vmx", "ept"}),
     ("vmx flags\t: x\nflags : svm\n", {"svm"}),  # only a key named exactly `flags`
     ("", set()), ("processor: 0\n", set())],
)  # fmt: skip
def test_cpu_flags_are_the_first_flags_line(cpuinfo: str, flags: set[str]) -> None:
    assert cpu_flags(cpuinfo) == flags


@pytest.mark.parametrize(
    ("opens", "flags", "modules", "kind"),
    [
        (False, {"vmx"}, {"kvm", "kvm_intel"}, "none"),
        (False, set(), {"kvm", "kvm_pvm"}, "none"),
        (True, {"vmx"}, {"kvm", "kvm_intel"}, "hardware"),
        (True, {"svm"}, {"kvm", "kvm_amd"}, "hardware"),
        # these machines: PVM serves /dev/kvm, no VMX in sight
        (True, {"hypervisor", "avx2"}, {"kvm", "kvm_pvm"}, "pvm"),
        # PVM loaded beside hardware virtualization: the hardware is tried
        (True, {"vmx"}, {"kvm", "kvm_intel", "kvm_pvm"}, "hardware"),
        # neither known: tried, and `auto`'s probe falls back if its guest prints nothing
        (True, set(), {"kvm"}, "hardware"),
    ],
)
def test_what_serves_dev_kvm(opens: bool, flags: set[str], modules: set[str], kind: str) -> None:
    assert kvm_kind(opens, flags, modules) == kind


def test_every_kind_auto_leaves_says_why() -> None:
    assert set(KVM_NOT_USED) == {"none", "pvm"}
    assert "kvm_pvm" in KVM_NOT_USED["pvm"]


def _host(tmp_path: Path, *, dev: bool, cpuinfo: str, modules: list[str]) -> str:
    sys_module = tmp_path / "module"
    sys_module.mkdir()
    for name in modules:
        (sys_module / name).mkdir()
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    if dev:
        (tmp_path / "kvm").write_bytes(b"")
    return host_kvm(tmp_path / "kvm", tmp_path / "cpuinfo", sys_module)


def test_host_kvm_reads_pvm_from_the_files(tmp_path: Path) -> None:
    assert (
        _host(tmp_path, dev=True, cpuinfo=FIRECRACKER_CPUINFO, modules=["kvm", "kvm_pvm"]) == "pvm"
    )


def test_host_kvm_reads_hardware_from_the_files(tmp_path: Path) -> None:
    cpuinfo = "flags\t\t: fpu vmx ept\n"
    assert _host(tmp_path, dev=True, cpuinfo=cpuinfo, modules=["kvm", "kvm_intel", "kvm_pvm"]) == (
        "hardware"
    )


def test_host_kvm_without_a_device_is_none(tmp_path: Path) -> None:
    assert _host(tmp_path, dev=False, cpuinfo="flags: vmx\n", modules=["kvm_intel"]) == "none"


def test_host_kvm_with_unreadable_cpuinfo_and_modules_still_decides(tmp_path: Path) -> None:
    (tmp_path / "kvm").write_bytes(b"")
    assert host_kvm(tmp_path / "kvm", tmp_path / "absent", tmp_path / "absent-dir") == "hardware"
