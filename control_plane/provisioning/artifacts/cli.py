"""``python -m control_plane artifacts build --out DIR``: the wheelhouse and the agent bundle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from control_plane.provisioning.artifacts.build import BuildRequest, build_artifacts
from control_plane.provisioning.artifacts.manifest import ManifestError
from control_plane.provisioning.artifacts.npm_bundle import DEFAULT_AGENTS, BundleError
from control_plane.provisioning.artifacts.wheelhouse import BuildError, WheelhouseSources

REPO = Path(__file__).resolve().parents[3]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="artifacts_command", required=True)
    build = sub.add_parser("build", help="build the wheelhouse and the agent bundle")
    build.add_argument("--out", type=Path, required=True, help="the artifacts directory")
    build.add_argument(
        "--agents",
        default=",".join(DEFAULT_AGENTS),
        help="comma-separated catalog names for the bundle; empty for no bundle",
    )
    build.add_argument("--repo", type=Path, default=REPO, help="the vm-agent source tree")
    build.add_argument("--lock", type=Path, help="default: REPO/locks/vm-agent.txt")
    build.add_argument("--find-links", type=Path, help="take wheels from here, not the index")
    build.add_argument(
        "--node-modules", type=Path, help="reuse this `npm ci` of agents/ instead of running it"
    )


def run(args: argparse.Namespace) -> int:
    repo: Path = args.repo.resolve()
    request = BuildRequest(
        out=args.out.resolve(),
        wheelhouse=WheelhouseSources(
            lock=args.lock or repo / "locks" / "vm-agent.txt",
            repo=repo,
            find_links=args.find_links,
        ),
        agents_dir=repo / "agents",
        agents=[name for name in args.agents.split(",") if name],
        node_modules=args.node_modules,
    )
    try:
        result = build_artifacts(request)
    except (BuildError, BundleError, ManifestError, OSError) as exc:
        print(f"artifacts build: {exc}", file=sys.stderr)
        return 1
    for name, entry in result.manifest.files().items():
        kind = "wheelhouse" if entry is result.manifest.wheelhouse else "agents"
        line = {
            "artifact": kind,
            "file": name,
            "bytes": entry.size,
            "sha256": entry.sha256,
            "seconds": round(result.seconds[kind], 1),
        }
        print(json.dumps(line))
    return 0
