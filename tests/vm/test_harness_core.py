"""The harness's pure parts, by tables: qemu's command line, the image recipe's key and
sources, console milestones, the guest agent's framing. No VM is booted here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from control_plane.providers.qemu.command import (
    GuestForward,
    HostForward,
    KvmKind,
    QemuSpec,
    accel_args,
    netdev,
    qemu_argv,
)
from tests.vm import timeline as tl
from tests.vm.launch import accelerators, kvm_not_tried, meta_data
from tests.vm.node_image import prune_node_images
from tests.vm.qga import exec_status, next_message
from tests.vm.recipe import PACKAGES, Recipe, cache_key, debian_stanzas, sources_for


def spec(**overrides: object) -> QemuSpec:
    fields: dict[str, object] = {
        "kernel": Path("/img/vmlinuz"),
        "initrd": Path("/img/initrd.img"),
        "rootfs": Path("/img/rootfs.img"),
        "seed": Path("/run/seed.img"),
        "console_log": Path("/run/console.log"),
        "agent_socket": Path("/run/qga.sock"),
    }
    fields.update(overrides)
    return QemuSpec(**fields)  # type: ignore[arg-type]


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, value in enumerate(argv) if value == name]


# qemu's command line


def test_networking_is_restricted_to_the_forwards() -> None:
    text = netdev(
        spec(
            host_forwards=(HostForward(41000, 8080), HostForward(41001, 22)),
            guest_forwards=(GuestForward(8700, 42000),),
        )
    )
    assert text.split(",")[:3] == ["user", "id=net0", "restrict=on"]
    assert "hostfwd=tcp:127.0.0.1:41000-:8080" in text.split(",")
    assert "hostfwd=tcp:127.0.0.1:41001-:22" in text.split(",")
    assert "guestfwd=tcp:10.0.2.100:8700-cmd:socat - TCP:127.0.0.1:42000" in text.split(",")


def test_no_forward_listens_beyond_loopback() -> None:
    text = netdev(spec(host_forwards=(HostForward(41000, 8080),)))
    for part in text.split(","):
        if part.startswith("hostfwd="):
            assert part.startswith("hostfwd=tcp:127.0.0.1:")


def test_root_disk_is_a_snapshot_and_the_seed_read_only() -> None:
    drives = option(qemu_argv(spec()), "-drive")
    assert drives == [
        "file=/img/rootfs.img,format=raw,if=virtio,snapshot=on",
        "file=/run/seed.img,format=raw,if=virtio,readonly=on",
    ]


def test_direct_kernel_boot_with_the_serial_console_to_a_file() -> None:
    argv = qemu_argv(spec())
    assert option(argv, "-kernel") == ["/img/vmlinuz"]
    assert option(argv, "-initrd") == ["/img/initrd.img"]
    assert "console=ttyS0" in option(argv, "-append")[0].split()
    assert "root=/dev/vda" in option(argv, "-append")[0].split()
    assert "file,id=console0,path=/run/console.log" in option(argv, "-chardev")
    assert option(argv, "-serial") == ["chardev:console0"]


def test_guest_agent_channel_is_a_unix_socket_served_by_qemu() -> None:
    argv = qemu_argv(spec())
    assert "socket,id=qga0,path=/run/qga.sock,server=on,wait=off" in option(argv, "-chardev")
    assert "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0" in option(
        argv, "-device"
    )


def test_commas_in_paths_are_escaped() -> None:
    drives = option(qemu_argv(spec(rootfs=Path("/a,b/rootfs.img"))), "-drive")
    assert drives[0].startswith("file=/a,,b/rootfs.img,")


@pytest.mark.parametrize(
    ("accel", "expected"),
    [
        ("tcg", ["-accel", "tcg,thread=multi", "-cpu", "max"]),
        ("kvm", ["-accel", "kvm", "-cpu", "host"]),
    ],
)
def test_accelerator_arguments(accel: str, expected: list[str]) -> None:
    assert accel_args(accel) == expected
    assert qemu_argv(spec(accel=accel))[1:5] == expected


@pytest.mark.parametrize(
    ("requested", "kvm_usable", "expected"),
    [
        ("tcg", True, ["tcg"]),
        ("kvm", False, ["kvm"]),
        ("auto", True, ["kvm", "tcg"]),
        ("auto", False, ["tcg"]),
    ],
)
def test_accelerators_tried(requested: str, kvm_usable: bool, expected: list[str]) -> None:
    assert accelerators(requested, kvm_usable) == expected


@pytest.mark.parametrize(
    ("requested", "kind", "says"),
    [
        ("auto", "pvm", "kvm_pvm"),
        ("auto", "none", "does not open"),
        ("auto", "hardware", None),
        ("tcg", "pvm", None),  # asked for: nothing to explain
        ("kvm", "pvm", None),
    ],
)
def test_the_report_says_why_auto_left_kvm(requested: str, kind: KvmKind, says: str | None) -> None:
    note = kvm_not_tried(requested, kind)
    if says is None:
        assert note is None
    else:
        assert note is not None and note.startswith("accel auto: TCG") and says in note


def test_unknown_accelerator_is_refused() -> None:
    with pytest.raises(ValueError, match="hvf"):
        accelerators("hvf", True)
    with pytest.raises(ValueError, match="hvf"):
        accel_args("hvf")


def test_meta_data_names_the_instance() -> None:
    assert yaml.safe_load(meta_data("vm-test-1", "node")) == {
        "instance-id": "vm-test-1",
        "local-hostname": "node",
    }


# the image recipe


def test_recipe_holds_what_the_harness_and_product_need_and_no_node() -> None:
    for package in ("qemu-guest-agent", "cloud-init", "python3-venv", "nftables", "systemd-sysv"):
        assert package in PACKAGES
    assert not [p for p in PACKAGES if p.startswith("nodejs")]
    files = Recipe().files
    assert files["etc/fstab"].split()[:3] == ["/dev/vda", "/", "ext4"]
    # only lo: cloud-init's fallback config names the NIC
    interfaces = files["etc/network/interfaces"]
    assert "source /etc/network/interfaces.d/*" in interfaces
    assert [line for line in interfaces.splitlines() if line.startswith("iface")] == [
        "iface lo inet loopback"
    ]


def test_cache_key_follows_packages_builder_and_sources() -> None:
    base = cache_key(Recipe(), b"builder", "sources")
    assert base == cache_key(Recipe(), b"builder", "sources")
    assert base.startswith("bookworm-")
    others = {
        cache_key(Recipe(packages=(*PACKAGES, "jq")), b"builder", "sources"),
        cache_key(Recipe(packages=tuple(reversed(PACKAGES))), b"builder", "sources"),
        cache_key(Recipe(), b"builder v2", "sources"),
        cache_key(Recipe(), b"builder", "other sources"),
        cache_key(Recipe(disk_size="8G"), b"builder", "sources"),
    }
    # the package order does not matter; everything else does
    assert base in others and len(others) == 5


HOST_SOURCES = """\
Types: deb
# a comment
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

OTHER_SOURCES = """\
Types: deb
URIs: https://vendor.invalid/node_20.x
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg

Types: deb
URIs: http://mirror.invalid/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_only_debians_own_sources_for_the_suite_are_kept() -> None:
    assert len(debian_stanzas(HOST_SOURCES, "bookworm")) == 2
    assert debian_stanzas(OTHER_SOURCES, "bookworm") == []
    text = sources_for([HOST_SOURCES, OTHER_SOURCES], "bookworm")
    assert "vendor.invalid" not in text and "trixie" not in text and "# a comment" not in text
    assert text.count("Types: deb") == 2
    assert sources_for([OTHER_SOURCES], "bookworm") == ""


# console milestones and the report


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists", tl.KERNEL),
        ("[   23.1] systemd[1]: systemd 252.39-1~deb12u1 running in system mode", tl.SYSTEMD),
        ("Welcome to \x1b[1mDebian GNU/Linux 12 (bookworm)\x1b[0m!", tl.SYSTEMD),
        (
            "[   28.3] systemd[1]: Starting cloud-init-local.service - Initial cloud-init job",
            tl.CLOUD_INIT_START,
        ),
        (
            "         Starting \x1b[0;1;39mcloud-init-local.\u2026cloud-init job (pre-netw\r",
            tl.CLOUD_INIT_START,
        ),
        ("[  OK  ] Finished \x1b[0;1;39mcloud-init-local.\u2026l cloud-init job", None),
        ("[   41.2] cloud-init[231]: Cloud-init v. 22.4.2 running 'init-local' at Wed", None),
        ("Cloud-init v. 22.4.2 running 'modules:final' at Wed, 02 Dec", None),
        (
            "cloud-init[512]: Cloud-init v. 22.4.2 finished at Wed, 02 Dec 2026. Up 95.2 seconds",
            tl.CLOUD_INIT_FINAL,
        ),
        ("[  OK  ] Started systemd-journald.service - Journal Service.", None),
        ("", None),
    ],
)
def test_console_milestones(line: str, expected: str | None) -> None:
    assert tl.console_mark(line) == expected


def test_first_mark_of_a_name_counts_and_the_report_measures_from_both_origins() -> None:
    timeline = tl.Timeline()
    timeline.mark(tl.QEMU_START, 0.0)
    timeline.mark(tl.AGENT_UP, 40.0)
    timeline.mark(tl.CLOUD_INIT_START, 50.0)
    timeline.mark(tl.CLOUD_INIT_START, 70.0)
    timeline.mark(tl.CLOUD_INIT_DONE, 95.5)
    assert timeline.since(tl.CLOUD_INIT_DONE) == 95.5
    assert timeline.since(tl.CLOUD_INIT_DONE, tl.CLOUD_INIT_START) == 45.5
    assert timeline.since("ready", tl.CLOUD_INIT_START) is None
    assert timeline.since(tl.CLOUD_INIT_DONE, "never") is None
    assert timeline.report() == [
        "qemu_start: 0.0 s from qemu start",
        "guest_agent_up: 40.0 s from qemu start",
        "cloud_init_started: 50.0 s from qemu start",
        "cloud_init_done: 95.5 s from qemu start, 45.5 s from cloud-init's start",
    ]


# the guest agent's framing


@pytest.mark.parametrize(
    ("buffer", "message", "rest"),
    [
        (b'{"return": 1}\n', {"return": 1}, b""),
        (b'{"return": 1}\n{"return": 2}\n', {"return": 1}, b'{"return": 2}\n'),
        (b'{"return": 1', None, b'{"return": 1'),
        # a resync byte before an answer, and a line cut short by one
        (b'\xff{"return": 7}\n', {"return": 7}, b""),
        (b'{"retu\xff{"return": 7}\n', {"return": 7}, b""),
        (b"garbage\n[1, 2]\n\n" + b'{"error": {"desc": "x"}}\n', {"error": {"desc": "x"}}, b""),
    ],
)
def test_next_message(buffer: bytes, message: object, rest: bytes) -> None:
    assert next_message(buffer) == (message, rest)


def test_exec_status_decodes_streams() -> None:
    status = exec_status(
        {"exited": True, "exitcode": 3, "out-data": "b3V0Cg==", "err-data": "ZXJyCg=="}
    )
    assert (status.exited, status.exit_code, status.signal) == (True, 3, None)
    assert (status.stdout, status.stderr, status.truncated) == (b"out\n", b"err\n", False)
    running = exec_status({"exited": False})
    assert not running.exited and running.stdout == b""


def test_a_node_image_build_removes_the_stale_ones_and_nothing_else(tmp_path: Path) -> None:
    for name in ("node-aaaa", "node-bbbb", "node-cccc", "bookworm-1234"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rootfs.img").write_bytes(b"x")
        (tmp_path / f"{name}.lock").touch()
    (tmp_path / "node-dddd.partial").mkdir()  # another build's, in progress
    removed = prune_node_images(tmp_path, "node-bbbb")
    assert [p.name for p in removed] == ["node-aaaa", "node-cccc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bookworm-1234", "bookworm-1234.lock", "node-bbbb", "node-bbbb.lock", "node-dddd.partial",
    ]  # fmt: skip
