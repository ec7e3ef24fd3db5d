"""Shared inputs for the cloud_init tests, and the rule for system tools they drive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cloud_init.scripts import PROVISION_DIR

REPO = Path(__file__).resolve().parents[2]
UNIT_SOURCE = REPO / "systemd" / "vm-agent.service"
TOKEN = "bT9xQ2Vf3kLmN8pR4sT6uW1yZ0aB5cD7eF9gH2jK4mP"
PLANE = "https://cp.example.com"
WHEELHOUSE_URL = f"{PLANE}/artifacts/vm-agent-wheelhouse-0.1.0-0123456789ab.tar"
BUNDLE_URL = f"{PLANE}/artifacts/vm-agent-agents-claude-codex-0123456789ab.tar.gz"
WHEELHOUSE_SHA = "a" * 64
BUNDLE_SHA = "b" * 64


def valid_inputs(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node_id": "node-1",
        "hostname": "vm-node-1",
        "control_plane_url": PLANE,
        "jwks_url": f"{PLANE}/.well-known/jwks.json",
        "bootstrap_token": TOKEN,
        "wheelhouse": {"url": WHEELHOUSE_URL, "sha256": WHEELHOUSE_SHA},
        "agents": {
            "bundle": {"url": BUNDLE_URL, "sha256": BUNDLE_SHA},
            "names": ("claude", "codex"),
        },
    }
    data.update(overrides)
    return data


def runcmd_scripts(text: str) -> dict[str, str]:
    """The scripts in runcmd, by the $0 name each ``bash -c`` entry carries."""
    doc = yaml.safe_load(text)
    scripts = {}
    for entry in doc["runcmd"]:
        assert entry[:2] == ["bash", "-c"] and len(entry) == 4
        scripts[entry[3]] = entry[2]
    return scripts


def step_scripts(text: str) -> dict[str, str]:
    """The provisioning steps (write_files under PROVISION_DIR), by name, in file order."""
    prefix = PROVISION_DIR + "/"
    return {
        path.removeprefix(prefix).removesuffix(".sh"): entry["content"]
        for path, entry in files_by_path(text).items()
        if path.startswith(prefix)
    }


def relocate(script: str, moves: dict[str, Path]) -> str:
    """The script with each ``name=...`` assignment at its top pointing at a test path."""
    for name, path in moves.items():
        lines = [line for line in script.splitlines() if line.startswith(f"{name}=")]
        assert len(lines) == 1, name
        script = script.replace(lines[0] + "\n", f"{name}={path}\n")
    return script


def files_by_path(text: str) -> dict[str, dict[str, Any]]:
    return {entry["path"]: entry for entry in yaml.safe_load(text)["write_files"]}
