"""Running install steps for real: a control plane on loopback that serves artifacts and
makes a node (its user-data is what the steps come from), and bash with logging stubs
for the tools that would change this machine."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from control_plane.settings import ControlPlaneSettings
from tests.capabilities import require_tool
from tests.cloud_init.helpers import relocate, step_scripts
from tests.control_plane.harness import running
from tests.provisioning.fixtures import BuiltArtifacts

STUBS = {
    "systemctl": 'echo "systemctl $*" >> "$LOG"\n',
    "nft": 'echo "nft $*" >> "$LOG"\n',
}


@asynccontextmanager
async def node_steps(tmp: Path, artifacts: BuiltArtifacts) -> AsyncIterator[dict[str, str]]:
    """A control plane serving the artifacts, and the steps of a node it created."""
    settings = ControlPlaneSettings(
        state_dir=tmp / "cp", public_url="http://127.0.0.1:1", artifacts_dir=artifacts.directory
    )
    async with running(settings) as cp:
        # Its public URL is where the VM fetches from: the port it really listens on.
        cp.plane.settings.public_url = cp.url
        answer = await cp.client.post("/api/nodes", json={"node_id": "node-1"}, headers=cp.admin())
        assert answer.status_code == 201, answer.text
        yield step_scripts(answer.json()["user_data"])


def stub_dir(tmp: Path) -> Path:
    bin_dir = tmp / "stubs"
    bin_dir.mkdir(exist_ok=True)
    for tool, body in STUBS.items():
        (bin_dir / tool).write_text("#!/bin/sh\n" + body)
        (bin_dir / tool).chmod(0o755)
    return bin_dir


async def bash(script: str, name: str, tmp: Path) -> tuple[int, str]:
    require_tool("curl", "curl")
    env = {
        "PATH": f"{stub_dir(tmp)}:{os.environ['PATH']}",
        "LOG": str(tmp / "log"),
        "HOME": str(tmp),
    }
    result = await anyio.run_process(["bash", "-c", script, name], env=env, check=False)
    return result.returncode, (result.stdout + result.stderr).decode()


def vm_agent_step(steps: dict[str, str], tmp: Path) -> str:
    return relocate(
        steps["vm-agent"],
        {"venv": tmp / "opt" / "vm-agent", "work": tmp / "work", "python": Path(sys.executable)},
    )


def agents_step(steps: dict[str, str], tmp: Path) -> str:
    return relocate(steps["agents"], {"target": tmp / "agents", "work": tmp / "agents-work"})
