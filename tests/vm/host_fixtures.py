"""Session fixtures for the product's VM tests (tests/vm/conftest.py imports them):

- `vm_artifacts`: the artifacts `make artifacts` built (skips without them; fails under CI);
- `vm_portal`: an anyio event loop in a thread of its own, for the control plane and viewers;
- `vm_github`: the GitHub stand-in on the host (github_host.py);
- `vm_plane`: the control plane on HTTPS (plane_host.py), serving those artifacts, acting
  as a GitHub App against that stand-in;
- `vm_figures`: the figures the tests record, printed in the summary and written to
  `$VM_TEST_REPORT_DIR` (default `build/vm-test`) as figures.json and figures.md.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from control_plane.provisioning.artifacts.manifest import (
    Manifest,
    ManifestError,
    load_manifest,
    verify_files,
)
from control_plane.provisioning.artifacts.wheelhouse import OWN_PACKAGE, build_own_wheel
from tests.capabilities import missing
from tests.vm.figures import FigureBook
from tests.vm.github_host import GitHubHost, github_stand_in
from tests.vm.plane_host import HostPlane, host_plane, plane_tls

# Node certificates for 10 minutes: the daemons renew theirs (at two-thirds of the life,
# which the 5-minute backdating makes 5 minutes after the bootstrap) while the tests run,
# and a failed renewal shows as viewers that can no longer connect.
NODE_CERT_TTL_S = 600

REPO = Path(__file__).resolve().parents[2]
_book = FigureBook()


def report_dir() -> Path:
    return Path(os.environ.get("VM_TEST_REPORT_DIR") or REPO / "build" / "vm-test")


def artifacts_dir() -> Path:
    return Path(os.environ.get("VM_AGENT_ARTIFACTS") or REPO / "build" / "artifacts")


def stale_because(directory: Path, manifest: Manifest) -> str | None:
    """Why the wheelhouse does not hold this tree's vm-agent (the build is reproducible:
    the same sources give the same wheel), or None."""
    with tarfile.open(directory / manifest.wheelhouse.file) as tar:
        member = tar.extractfile("wheelhouse/requirements.txt")
        assert member is not None
        pins = member.read().decode()
    [pinned] = [line for line in pins.splitlines() if line.startswith(f"{OWN_PACKAGE}==")]
    with tempfile.TemporaryDirectory(prefix="vm-test-wheel-") as work:
        wheel = build_own_wheel(REPO, Path(work), sys.executable)
        built = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if f"sha256:{built}" in pinned:
        return None
    return f"its vm-agent wheel is not this tree's ({pinned.split()[0]}, {built[:12]} now)"


@pytest.fixture(scope="session")
def vm_artifacts() -> Path:
    directory = artifacts_dir()
    try:
        manifest = load_manifest(directory)
        why = stale_because(directory, manifest)
    except ManifestError as exc:
        why = str(exc)
    if why is not None:
        missing(f"the VM installs the built artifacts, and {why}: run `make artifacts`")
    verify_files(directory, manifest)
    return directory.resolve()


@pytest.fixture(scope="session")
def vm_portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as portal:
        yield portal


@pytest.fixture(scope="session")
def vm_github(
    vm_portal: BlockingPortal, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitHubHost]:
    with github_stand_in(vm_portal, tmp_path_factory.mktemp("vm-github")) as github:
        yield github


@pytest.fixture(scope="session")
def vm_plane(
    vm_portal: BlockingPortal,
    vm_artifacts: Path,
    vm_github: GitHubHost,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostPlane]:
    base = tmp_path_factory.mktemp("vm-plane")
    tls = plane_tls(base / "tls")
    with host_plane(
        vm_portal,
        base / "state",
        vm_artifacts,
        tls,
        node_cert_ttl_s=NODE_CERT_TTL_S,
        **vm_github.plane_settings(),
    ) as plane:
        yield plane


@pytest.fixture(scope="session")
def vm_figures() -> Iterator[FigureBook]:
    yield _book
    if _book.figures:
        _book.write(report_dir())


def figures_summary(terminalreporter: Any) -> None:
    if _book.figures:
        terminalreporter.section("VM test figures")
        for line in _book.lines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(also in {report_dir() / 'figures.md'})")
