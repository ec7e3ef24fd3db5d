"""The wheelhouse: the locked wheels for Debian 12's python3 plus the vm-agent wheel.

Layout of the tar (uncompressed: wheels are zip files already)::

    wheelhouse/requirements.txt   every wheel to install, pinned, with its sha256
    wheelhouse/wheels/*.whl       those wheels, and pip's own (run from its wheel on the VM)

Wheels come from the package index through ``pip download --require-hashes``, so a file
whose hash is not in the lock is refused at build time; ``find_links`` swaps the index for a
local directory (tests, offline rebuilds). The VM installs with
``pip install --no-index --require-hashes``: nothing is resolved at boot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from control_plane.provisioning.artifacts.lockfile import LockError, Pin, normalize, parse_lock
from control_plane.provisioning.artifacts.manifest import Wheelhouse, sha256_of
from control_plane.provisioning.artifacts.tarball import MTIME, write_tar

# Debian 12 (bookworm): CPython 3.11, x86_64, glibc 2.36.
PYTHON_VERSION = "3.11"
ABI = "cp311"
GLIBC_MINOR = 36
BOOTSTRAP_PACKAGE = "pip"
OWN_PACKAGE = "vm-agent"
# Not copied into the build: caches, environments, outputs.
_SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "node_modules", "__pycache__", "*.egg-info",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".dev", "benchmarks", "tests", "agents",
)  # fmt: skip


class BuildError(RuntimeError):
    pass


def platform_tags(glibc_minor: int = GLIBC_MINOR, arch: str = "x86_64") -> list[str]:
    """Every manylinux tag a glibc 2.<minor> system accepts, newest first (pip wants them all)."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{arch}" for minor, name in legacy.items() if minor <= glibc_minor]
    return tags


def _pip(args: list[str], python: str) -> None:
    # No user or site pip configuration (extra indexes, constraints) leaks into a build;
    # SOURCE_DATE_EPOCH fixes the times in the wheel built here.
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "SOURCE_DATE_EPOCH": str(MTIME),
    }
    result = subprocess.run(
        [python, "-m", "pip", "--isolated", *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BuildError(f"pip {args[0]} failed:\n{tail}")


def download_locked(lock: Path, dest: Path, *, find_links: Path | None, python: str) -> None:
    args = ["download", "--no-deps", "--only-binary=:all:", "--require-hashes", "--quiet"]
    args += ["--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", ABI]
    for tag in platform_tags():
        args += ["--platform", tag]
    if find_links is not None:
        args += ["--no-index", "--find-links", str(find_links)]
    _pip([*args, "--dest", str(dest), "-r", str(lock)], python)


def build_own_wheel(repo: Path, work: Path, python: str) -> Path:
    """The vm-agent wheel from a clean copy of the source (no stale build/ files in it)."""
    source = work / "source"
    shutil.copytree(repo, source, ignore=_SOURCE_IGNORE, symlinks=False)
    out = work / "own"
    _pip(
        ["wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
        python,
    )
    wheels = sorted(out.glob("vm_agent-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one vm_agent wheel, found {[w.name for w in wheels]}")
    return wheels[0]


def _wheel_pin(wheel: Path) -> Pin:
    name, version = wheel.name.split("-")[:2]
    return Pin(normalize(name), version, (f"sha256:{sha256_of(wheel)}",))


def _check_one_wheel_per_pin(pins: list[Pin], wheels: list[Path]) -> None:
    found: dict[str, list[str]] = {}
    for wheel in wheels:
        found.setdefault(normalize(wheel.name.split("-")[0]), []).append(wheel.name)
    for pin in pins:
        names = found.get(pin.name, [])
        if len(names) != 1:
            raise BuildError(f"{pin.name}=={pin.version}: expected one wheel, got {names}")


@dataclass(frozen=True)
class WheelhouseSources:
    lock: Path
    repo: Path
    find_links: Path | None = None
    python: str = sys.executable
    # A vm-agent wheel built elsewhere, instead of building one from `repo`.
    own_wheel: Path | None = None


def build_wheelhouse(sources: WheelhouseSources, out_dir: Path, work: Path) -> Wheelhouse:
    try:
        pins = parse_lock(sources.lock.read_text())
    except LockError as exc:
        raise BuildError(f"{sources.lock}: {exc}") from None
    if not any(p.name == BOOTSTRAP_PACKAGE for p in pins):
        raise BuildError(f"{sources.lock}: pip is not pinned (the VM runs pip from its wheel)")
    if any(p.name == OWN_PACKAGE for p in pins):
        raise BuildError(f"{sources.lock}: vm-agent itself must not be in the lock")
    tree = work / "wheelhouse"
    wheels_dir = tree / "wheels"
    download_locked(sources.lock, wheels_dir, find_links=sources.find_links, python=sources.python)
    _check_one_wheel_per_pin(pins, sorted(wheels_dir.glob("*.whl")))
    own = sources.own_wheel or build_own_wheel(sources.repo, work, sources.python)
    shutil.copy2(own, wheels_dir / own.name)
    own_pin = _wheel_pin(own)
    installed = [p for p in pins if p.name != BOOTSTRAP_PACKAGE] + [own_pin]
    (tree / "requirements.txt").write_text(
        "# Installed on the VM with: pip install --no-index --require-hashes -r requirements.txt\n"
        + "".join(pin.requirement_line() + "\n" for pin in installed)
    )
    tmp = out_dir / ".wheelhouse.tar.tmp"
    write_tar(tmp, [(tree, "wheelhouse")], gzip=False)
    digest = sha256_of(tmp)
    final = out_dir / f"vm-agent-wheelhouse-{own_pin.version}-{digest[:12]}.tar"
    os.replace(tmp, final)
    return Wheelhouse(
        file=final.name, sha256=digest, size=final.stat().st_size, vm_agent_version=own_pin.version
    )
