"""The systemd unit: the settings the issue asks for, and ``systemd-analyze verify``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.capabilities import require_tool
from tests.cloud_init.helpers import UNIT_SOURCE

EXEC_START = "ExecStart=/opt/vm-agent/bin/vm-agent serve"
DAEMON_SHUTDOWN_BOUND_S = 10


def directives() -> dict[tuple[str, str], str]:
    section = ""
    found: dict[tuple[str, str], str] = {}
    for raw in UNIT_SOURCE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        assert (section, key) not in found, f"{key} set twice"
        found[(section, key)] = value
    return found


def test_service_settings() -> None:
    unit = directives()
    service = {key: value for (section, key), value in unit.items() if section == "Service"}
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/opt/vm-agent/bin/vm-agent serve"
    assert service["EnvironmentFile"] == "/etc/vm-agent/env"
    assert service["Restart"] == "always"
    assert int(service["RestartSec"]) > 0
    assert int(service["WatchdogSec"]) > 0
    assert int(service["TimeoutStopSec"]) >= 2 * DAEMON_SHUTDOWN_BOUND_S
    assert service["KillMode"] == "mixed"
    assert service["Delegate"] == "yes"
    assert service["StateDirectory"] == "vm-agent"
    # A finite start limit: a crash loop ends in "failed", where operators see it.
    assert int(unit[("Unit", "StartLimitIntervalSec")]) > 0
    burst = int(unit[("Unit", "StartLimitBurst")])
    assert burst * int(service["RestartSec"]) < int(unit[("Unit", "StartLimitIntervalSec")])
    assert unit[("Install", "WantedBy")] == "multi-user.target"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "full"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectProc", "invisible"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("PrivateDevices", "yes"),
        ("SystemCallArchitectures", "native"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"),
    ],
)
def test_hardening(key: str, value: str) -> None:
    assert directives()[("Service", key)] == value


# ProtectControlGroups: the daemon writes its delegated cgroup subtree (containment).
@pytest.mark.parametrize(
    "key", ["MemoryDenyWriteExecute", "ProtectHome", "RestrictNamespaces", "ProtectControlGroups"]
)
def test_no_hardening_that_breaks_agents(key: str) -> None:
    assert ("Service", key) not in directives()


def test_the_capabilities_are_the_ones_the_daemon_uses() -> None:
    bounded = set(directives()[("Service", "CapabilityBoundingSet")].split())
    # switching to agent users, their 0700 workspaces, their processes (signals, /proc)
    needed = {"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL"}
    assert needed | {"CAP_SYS_PTRACE"} <= bounded
    assert not bounded & {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE", "CAP_NET_RAW"}


def verify(unit_text: str, tmp_path: Path) -> list[str]:
    """What ``systemd-analyze verify`` complains about, with ExecStart on a stub."""
    tool = require_tool("systemd-analyze", "systemd")
    stub = tmp_path / "bin" / "vm-agent"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    assert unit_text.count(EXEC_START + "\n") == 1
    unit = tmp_path / "vm-agent.service"
    unit.write_text(unit_text.replace(EXEC_START, f"ExecStart={stub} serve"))
    result = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = (result.stdout + result.stderr).splitlines()
    if result.returncode != 0:
        problems.append(f"exit status {result.returncode}")
    return problems


@pytest.mark.integration
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    assert verify(UNIT_SOURCE.read_text(), tmp_path) == []


@pytest.mark.integration
def test_verify_reports_unknown_directives(tmp_path: Path) -> None:
    broken = UNIT_SOURCE.read_text().replace("[Service]\n", "[Service]\nNoSuchSetting=1\n")
    problems = verify(broken, tmp_path)
    assert any("NoSuchSetting" in line for line in problems)


def test_the_first_start_can_write_its_files_and_a_refusal_is_not_restarted() -> None:
    service = {key: value for (section, key), value in directives().items() if section == "Service"}
    # ProtectSystem=full makes /etc read-only; the bootstrap writes and deletes there.
    assert "/etc/vm-agent" in service["ReadWritePaths"].split()
    # Status 2: a bad setting or a refused bootstrap token; restarting cannot mend either.
    assert service["RestartPreventExitStatus"].split() == ["2"]
    # A finite start timeout: the bootstrap extends it while it waits, a hang is killed.
    assert 0 < int(service["TimeoutStartSec"]) < int(service["WatchdogSec"]) * 10
