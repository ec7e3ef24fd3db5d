"""cloud-init's own schema validator on the rendered document; shellcheck on its scripts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloud_init import render, validate_params
from tests.cloud_init.helpers import PLANE, require_tool, runcmd_scripts, valid_inputs

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "custom-swap": {"swap": {"size_mb": 512, "swappiness": 1}, "port": 9000},
    "no-swap": {"swap": {"size_mb": 0, "swappiness": 60}},
    "wheel": {"agent_package": f"{PLANE}/dist/vm_agent-0.1.0-py3-none-any.whl#sha256=" + "f" * 64},
    "loopback-dev": {
        "control_plane_url": "http://127.0.0.1:8000",
        "jwks_url": "http://127.0.0.1:8000/jwks.json",
        "agent_package": "http://127.0.0.1:8000/whl/vm_agent-0.1.0-py3-none-any.whl",
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
    scripts = runcmd_scripts(render(validate_params(valid_inputs(**VARIANTS[variant]))))
    assert "vm-agent-install" in scripts
    for name, script in scripts.items():
        result = shellcheck(script)
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


@pytest.mark.integration
def test_shellcheck_catches_an_unquoted_variable() -> None:
    assert shellcheck("f=$1\nrm -rf $f\n").returncode != 0
