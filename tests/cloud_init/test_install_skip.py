"""A node image's install kept (docs/provisioning.md): the vm-agent and agents steps run for
real by bash in a directory root, fetching from a loopback server that records each request.
A marker naming this boot's artifact, on an install that still runs, skips the step without a
fetch; a different hash, or a broken install under a matching marker, installs as today."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.cloud_init.install_harness import agents_step, bash, node_steps, vm_agent_step
from tests.provisioning.fixtures import BuiltArtifacts, build_test_artifacts

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SKIPPED = "already installed (node image): skipped"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> BuiltArtifacts:
    return build_test_artifacts(tmp_path_factory.mktemp("artifacts"))


class Recorded:
    def __init__(self, url: str) -> None:
        self.url = url
        self.paths: list[str] = []


@pytest.fixture
def server(artifacts: BuiltArtifacts) -> Iterator[Recorded]:
    recorded = Recorded("")

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            recorded.paths.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = partial(Handler, directory=str(artifacts.directory))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    recorded.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield recorded
    httpd.shutdown()
    httpd.server_close()


async def _scripts(tmp: Path, artifacts: BuiltArtifacts, server: Recorded) -> dict[str, str]:
    """The node's two install steps, relocated under `tmp` and fetching from `server`."""
    agents = artifacts.manifest.agents
    assert agents is not None
    async with node_steps(tmp / "cp-root", artifacts) as steps:
        wheelhouse = _fetch_from(
            vm_agent_step(steps, tmp), server.url, artifacts.manifest.wheelhouse.file
        )
        bundle = _fetch_from(agents_step(steps, tmp), server.url, agents.file)
    return {"vm-agent": wheelhouse, "agents": bundle}


def _fetch_from(script: str, base: str, file: str) -> str:
    (line,) = [line for line in script.splitlines() if line.startswith("url=")]
    return script.replace(line + "\n", f"url={base}/{file}\n")


async def _run(scripts: dict[str, str], name: str, tmp: Path) -> str:
    status, output = await bash(scripts[name], name, tmp)
    assert status == 0, output
    return output


async def test_a_matching_marker_skips_both_steps_without_a_fetch(
    tmp_path: Path, artifacts: BuiltArtifacts, server: Recorded
) -> None:
    (tmp_path / "cp-root").mkdir()
    scripts = await _scripts(tmp_path, artifacts, server)
    for name in ("vm-agent", "agents"):
        assert SKIPPED not in await _run(scripts, name, tmp_path)
    assert len(server.paths) == 2
    wheelhouse_sha = artifacts.manifest.wheelhouse.sha256
    marker = tmp_path / "opt" / "vm-agent" / ".installed-wheelhouse-sha256"
    assert marker.read_text() == wheelhouse_sha + "\n" and oct(marker.stat().st_mode)[-3:] == "644"
    assert artifacts.manifest.agents is not None
    bundle_marker = tmp_path / "agents" / ".installed-bundle-sha256"
    commands = "claude-agent-acp codex-acp"
    assert bundle_marker.read_text() == f"{artifacts.manifest.agents.sha256} {commands}\n"

    server.paths.clear()
    output = await _run(scripts, "vm-agent", tmp_path)
    assert f"vm-agent: wheelhouse {wheelhouse_sha} {SKIPPED}" in output
    output = await _run(scripts, "agents", tmp_path)
    assert f"({commands}) {SKIPPED}" in output
    assert server.paths == []  # nothing fetched
    assert not (tmp_path / "work").exists() and not (tmp_path / "agents-work").exists()


async def test_another_hash_installs_as_today_and_updates_the_marker(
    tmp_path: Path, artifacts: BuiltArtifacts, server: Recorded
) -> None:
    (tmp_path / "cp-root").mkdir()
    scripts = await _scripts(tmp_path, artifacts, server)
    venv = tmp_path / "opt" / "vm-agent"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "vm-agent").write_text("#!/bin/sh\necho old\n")
    (venv / "bin" / "vm-agent").chmod(0o755)
    (venv / ".installed-wheelhouse-sha256").write_text("0" * 64 + "\n")
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "old-file").write_text("from another bundle")
    assert artifacts.manifest.agents is not None
    # the same bundle, but fewer commands than this node wants: installed again
    (agents / ".installed-bundle-sha256").write_text(
        f"{artifacts.manifest.agents.sha256} claude-agent-acp\n"
    )
    for name in ("vm-agent", "agents"):
        assert SKIPPED not in await _run(scripts, name, tmp_path)
    assert len(server.paths) == 2
    marker = (venv / ".installed-wheelhouse-sha256").read_text()
    assert marker == artifacts.manifest.wheelhouse.sha256 + "\n"
    assert (venv / "lib" / "python3.11" / "site-packages" / "probe_dep").is_dir()
    assert not (agents / "old-file").exists()  # replaced whole
    assert (
        (agents / ".installed-bundle-sha256").read_text().endswith(" claude-agent-acp codex-acp\n")
    )


async def test_a_broken_install_under_a_matching_marker_is_installed_again(
    tmp_path: Path, artifacts: BuiltArtifacts, server: Recorded
) -> None:
    (tmp_path / "cp-root").mkdir()
    scripts = await _scripts(tmp_path, artifacts, server)
    for name in ("vm-agent", "agents"):
        await _run(scripts, name, tmp_path)
    (tmp_path / "opt" / "vm-agent" / "bin" / "vm-agent").unlink()
    (tmp_path / "agents" / "bin" / "codex-acp").unlink()
    server.paths.clear()
    for name in ("vm-agent", "agents"):
        assert SKIPPED not in await _run(scripts, name, tmp_path)
    assert len(server.paths) == 2
    assert (tmp_path / "opt" / "vm-agent" / "bin" / "vm-agent").exists()
    assert (tmp_path / "agents" / "bin" / "codex-acp").exists()
