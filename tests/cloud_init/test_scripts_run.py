"""The swap step run for real by bash, with the system tools that would touch this machine
(swapon, mkswap, sysctl) replaced by logging stubs and the target paths moved into a temp dir."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloud_init import render, validate_params
from tests.cloud_init.helpers import relocate, step_scripts, valid_inputs

pytestmark = pytest.mark.integration

SWAP_STUBS = {
    "fallocate": """
echo "fallocate $*" >> "$LOG"
[ -z "${FALLOCATE_FAILS:-}" ] || exit 1
dd if=/dev/zero of="$3" bs=1M count=1 status=none
""",
    "mkswap": 'echo "mkswap $*" >> "$LOG"\n',
    "swapon": """
if [ "$1" = "--show=NAME" ]; then cat "$STATE" 2>/dev/null; exit 0; fi
echo "swapon $*" >> "$LOG"
if [ -n "${SWAPON_FAILS_ONCE:-}" ] && [ ! -e "$STATE.failed" ]; then
  touch "$STATE.failed"; exit 1
fi
echo "$1" >> "$STATE"
""",
    "sysctl": 'echo "sysctl $*" >> "$LOG"\n',
}


def run(script: str, name: str, tmp: Path, stubs: dict[str, str], **env: str) -> None:
    bin_dir = tmp / "stubs"
    bin_dir.mkdir(exist_ok=True)
    for tool, body in stubs.items():
        (bin_dir / tool).write_text("#!/bin/sh\n" + body)
        (bin_dir / tool).chmod(0o755)
    environment = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "LOG": str(tmp / "log"),
        "STATE": str(tmp / "active-swaps"),
        **env,
    }
    result = subprocess.run(
        ["bash", "-c", script, name],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def swap_setup(tmp: Path, **overrides: Any) -> str:
    text = render(validate_params(valid_inputs(swap={"size_mb": 1, "swappiness": 15}, **overrides)))
    (tmp / "fstab").write_text("UUID=abc / ext4 defaults 0 1\n")
    return relocate(
        step_scripts(text)["swap"],
        {
            "swapfile": tmp / "swapfile",
            "fstab": tmp / "fstab",
            "sysctl_conf": tmp / "99-swap.conf",
        },
    )


def log_lines(tmp: Path) -> list[str]:
    return (tmp / "log").read_text().splitlines()


def test_swap_is_created_enabled_and_persisted_once(tmp_path: Path) -> None:
    script = swap_setup(tmp_path)
    run(script, "vm-agent-swap", tmp_path, SWAP_STUBS)
    swapfile = tmp_path / "swapfile"
    assert stat.S_IMODE(swapfile.stat().st_mode) == 0o600
    assert swapfile.stat().st_size == 1024 * 1024
    assert log_lines(tmp_path) == [
        f"fallocate -l 1M {swapfile}",
        f"mkswap {swapfile}",
        f"swapon {swapfile}",
        "sysctl -q -w vm.swappiness=15",
    ]
    assert (tmp_path / "99-swap.conf").read_text() == "vm.swappiness = 15\n"

    run(script, "vm-agent-swap", tmp_path, SWAP_STUBS)
    # The second run finds the swap active: no new file, no second fstab line.
    assert log_lines(tmp_path)[4:] == ["sysctl -q -w vm.swappiness=15"]
    assert (tmp_path / "fstab").read_text() == (
        f"UUID=abc / ext4 defaults 0 1\n{swapfile} none swap sw 0 0\n"
    )


def test_fstab_is_not_duplicated_after_a_reboot(tmp_path: Path) -> None:
    script = swap_setup(tmp_path)
    run(script, "vm-agent-swap", tmp_path, SWAP_STUBS)
    (tmp_path / "active-swaps").unlink()  # after a reboot before fstab is read
    run(script, "vm-agent-swap", tmp_path, SWAP_STUBS)
    assert (tmp_path / "fstab").read_text().count("swapfile none swap") == 1


def test_dd_when_fallocate_fails(tmp_path: Path) -> None:
    run(swap_setup(tmp_path), "vm-agent-swap", tmp_path, SWAP_STUBS, FALLOCATE_FAILS="1")
    swapfile = tmp_path / "swapfile"
    assert swapfile.stat().st_size == 1024 * 1024
    assert stat.S_IMODE(swapfile.stat().st_mode) == 0o600
    assert f"swapon {swapfile}" in log_lines(tmp_path)


def test_dd_when_swapon_refuses_the_fallocated_file(tmp_path: Path) -> None:
    run(swap_setup(tmp_path), "vm-agent-swap", tmp_path, SWAP_STUBS, SWAPON_FAILS_ONCE="1")
    swapfile = tmp_path / "swapfile"
    assert log_lines(tmp_path) == [
        f"fallocate -l 1M {swapfile}",
        f"mkswap {swapfile}",
        f"swapon {swapfile}",
        f"mkswap {swapfile}",
        f"swapon {swapfile}",
        "sysctl -q -w vm.swappiness=15",
    ]
    assert (tmp_path / "active-swaps").read_text() == f"{swapfile}\n"
