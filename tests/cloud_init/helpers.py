"""Shared inputs for the cloud_init tests, and the rule for system tools they drive."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
UNIT_SOURCE = REPO / "systemd" / "vm-agent.service"
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJub2RlLTEiLCJzY29wZSI6Im5vZGUtY2FsbGJhY2sifQ.c2lnbmF0dXJl"
PLANE = "https://cp.example.com"
WHEEL = f"{PLANE}/dist/vm_agent-0.1.0-py3-none-any.whl"


def valid_inputs(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node_id": "node-1",
        "hostname": "vm-node-1",
        "control_plane_url": PLANE,
        "jwks_url": f"{PLANE}/.well-known/jwks.json",
        "callback_token": TOKEN,
        "agent_package": "vm-agent==0.1.0",
    }
    data.update(overrides)
    return data


def require_tool(name: str, package: str) -> str:
    """The tool's path; in CI a missing tool fails the test, elsewhere it skips it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found (Debian package {package}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def runcmd_scripts(text: str) -> dict[str, str]:
    """The scripts in runcmd, by the $0 name each ``bash -c`` entry carries."""
    doc = yaml.safe_load(text)
    scripts = {}
    for entry in doc["runcmd"]:
        assert entry[:2] == ["bash", "-c"] and len(entry) == 4
        scripts[entry[3]] = entry[2]
    return scripts


def files_by_path(text: str) -> dict[str, dict[str, Any]]:
    return {entry["path"]: entry for entry in yaml.safe_load(text)["write_files"]}
