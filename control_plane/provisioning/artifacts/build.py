"""Build both artifacts into one directory and write its manifest last.

The manifest is replaced atomically after the files it names are complete, so a control
plane serving the directory never hands out a hash for a file that is not there yet.
Files of earlier builds are left in place: a VM booting from older user-data still finds
them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from control_plane.provisioning.artifacts.manifest import Manifest, write_manifest
from control_plane.provisioning.artifacts.npm_bundle import build_agent_bundle, check_agent_names
from control_plane.provisioning.artifacts.wheelhouse import WheelhouseSources, build_wheelhouse


@dataclass(frozen=True)
class BuildRequest:
    out: Path
    wheelhouse: WheelhouseSources
    agents_dir: Path
    # Empty: no agent bundle (a node with the built-in fake agent only).
    agents: Sequence[str] = ()
    node_modules: Path | None = None


@dataclass
class BuildResult:
    manifest: Manifest
    seconds: dict[str, float] = field(default_factory=dict)


def build_artifacts(request: BuildRequest) -> BuildResult:
    check_agent_names(request.agents)  # before the slow part
    request.out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vm-agent-artifacts-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        wheelhouse = build_wheelhouse(request.wheelhouse, request.out, work / "wheelhouse")
        seconds["wheelhouse"] = time.monotonic() - started
        bundle = None
        if request.agents:
            started = time.monotonic()
            bundle_work = work / "agents"
            bundle_work.mkdir()
            bundle = build_agent_bundle(
                request.agents_dir,
                request.agents,
                request.out,
                bundle_work,
                node_modules=request.node_modules,
            )
            seconds["agents"] = time.monotonic() - started
    manifest = Manifest(wheelhouse=wheelhouse, agents=bundle)
    write_manifest(request.out, manifest)
    return BuildResult(manifest, seconds)
