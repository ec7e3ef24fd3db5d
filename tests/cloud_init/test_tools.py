"""cloud-init's own schema validator on the rendered document; shellcheck on its scripts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloud_init import render, validate_params
from cloud_init.firewall import FIREWALL_UNIT, RULES_FILE, unit_text
from tests.capabilities import CAP_NET_ADMIN, require_capability, require_tool
from tests.cloud_init.helpers import (
    files_by_path,
    runcmd_scripts,
    step_scripts,
    valid_inputs,
)

CA = (Path(__file__).parent / "test-ca.pem").read_text()
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "custom-swap": {"swap": {"size_mb": 512, "swappiness": 1}, "port": 9000},
    "no-swap": {"swap": {"size_mb": 0, "swappiness": 60}},
    "no-agents": {"agents": None},
    "private-ca": {"ca_certificate": CA, "agent_users": {"count": 2, "uid_base": 5000}},
    "loopback-dev": {
        "control_plane_url": "http://127.0.0.1:8000",
        "jwks_url": "http://127.0.0.1:8000/jwks.json",
        "wheelhouse": {"url": "http://127.0.0.1:8000/artifacts/w.tar", "sha256": "f" * 64},
        "agents": None,
    },
}


def schema_check(path: Path) -> tuple[int, str]:
    tool = require_tool("cloud-init", "cloud-init")
    result = subprocess.run(
        [tool, "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cloud_init_schema_accepts_the_document(variant: str, tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_text(render(validate_params(valid_inputs(**VARIANTS[variant]))))
    status, output = schema_check(path)
    assert status == 0, output
    assert "Valid cloud-config" in output
    assert "deprecat" not in output.lower()


@pytest.mark.integration
@pytest.mark.slow
def test_cloud_init_schema_rejects_a_broken_document(tmp_path: Path) -> None:
    text = render(validate_params(valid_inputs()))
    path = tmp_path / "user-data"
    path.write_text(text.replace("- path: /etc/vm-agent/env", "- pathh: /etc/vm-agent/env"))
    status, output = schema_check(path)
    assert status != 0
    assert "pathh" in output


def shellcheck(script: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("shellcheck", "shellcheck")
    return subprocess.run(
        [tool, "--shell=bash", "--severity=style", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_extracted_scripts_pass_shellcheck(variant: str) -> None:
    text = render(validate_params(valid_inputs(**VARIANTS[variant])))
    scripts = {**runcmd_scripts(text), **step_scripts(text)}
    assert {"vm-agent-provision", "vm-agent", "start"} <= set(scripts)
    for name, script in scripts.items():
        result = shellcheck(script)
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


@pytest.mark.integration
def test_shellcheck_catches_an_unquoted_variable() -> None:
    assert shellcheck("f=$1\nrm -rf $f\n").returncode != 0


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["defaults", "private-ca"])
def test_nft_accepts_the_metadata_block(variant: str, tmp_path: Path) -> None:
    """``nft --check`` parses the rules against the kernel's netlink without applying them."""
    tool = require_tool("nft", "nftables")
    # --check still asks the kernel's netlink, which answers EPERM without it
    require_capability(CAP_NET_ADMIN, "CAP_NET_ADMIN")
    rules = tmp_path / "rules.nft"
    text = render(validate_params(valid_inputs(**VARIANTS[variant])))
    rules.write_text(files_by_path(text)[RULES_FILE]["content"])
    result = subprocess.run(
        [tool, "--check", "-f", str(rules)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_nft_refuses_a_broken_rule(tmp_path: Path) -> None:
    tool = require_tool("nft", "nftables")
    rules = tmp_path / "rules.nft"
    rules.write_text("table inet t { chain c { meta skuid 1-2 ip daddr nonsense reject } }\n")
    result = subprocess.run(
        [tool, "--check", "-f", str(rules)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0


@pytest.mark.integration
def test_systemd_analyze_verify_accepts_the_firewall_unit(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze", "systemd")
    unit = tmp_path / FIREWALL_UNIT
    # ExecStart must exist for verify; nft may be elsewhere here than on the VM.
    nft = require_tool("nft", "nftables")
    unit.write_text(unit_text().replace("/usr/sbin/nft", nft))
    result = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "vm-agent.service" not in line  # the unit it orders itself before is not here
    ]
    assert result.returncode == 0 or not problems, problems
    assert problems == []
