"""`python -m control_plane serve|mint|artifacts ...`: serve, mint tokens, build VM artifacts.

Settings come from CONTROL_PLANE_* variables; --state-dir and --public-url override them.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from control_plane.app import serve_control_plane
from control_plane.plane import ControlPlane
from control_plane.provisioning.artifacts import cli as artifacts_cli
from control_plane.settings import ControlPlaneSettings

DEFAULT_PORT = 8700


def _settings(args: argparse.Namespace, default_url: str | None) -> ControlPlaneSettings:
    overrides: dict[str, Any] = {}
    if args.state_dir is not None:
        overrides["state_dir"] = args.state_dir
    if args.public_url is not None:
        overrides["public_url"] = args.public_url
    try:
        settings = ControlPlaneSettings(**overrides)
    except ValidationError as exc:
        missing = "public_url" in str(exc) and default_url is not None
        if not missing:
            raise SystemExit(f"control plane settings: {exc}") from exc
        overrides["public_url"] = default_url
        settings = ControlPlaneSettings(**overrides)
    return settings


async def _serve(settings: ControlPlaneSettings, host: str, port: int) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with serve_control_plane(settings, host, port) as url:
            print(f"control plane listening on {url}", flush=True)
            async for _ in signals:
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control_plane")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--public-url")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the control plane until SIGINT/SIGTERM")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    mint = sub.add_parser("mint", help="print a token")
    mint.add_argument("kind", choices=["callback", "viewer", "user", "admin"])
    mint.add_argument("subject", help="node id (callback, viewer) or user id")
    mint.add_argument("--write", action="store_true", help="viewer token with write scope")
    mint.add_argument("--ttl", type=int, default=None)
    artifacts_cli.add_arguments(sub.add_parser("artifacts", help="build what VMs install"))
    args = parser.parse_args(argv)

    if args.command == "artifacts":
        return artifacts_cli.run(args)

    if args.command == "serve":
        settings = _settings(args, f"http://{args.host}:{args.port}")
        anyio.run(_serve, settings, args.host, args.port)
        return 0
    # The database's keys (and, for a callback token, its ledger): what every replica uses.
    plane = ControlPlane.open(_settings(args, None))
    try:
        tokens = plane.tokens
        if args.kind == "callback":
            print(tokens.mint_callback_token(args.subject, args.ttl))
        elif args.kind == "viewer":
            scopes = ["read", "write"] if args.write else ["read"]
            print(tokens.mint_viewer_token(args.subject, scopes, args.ttl))
        else:
            print(tokens.mint_user_token(args.subject, admin=args.kind == "admin", ttl_s=args.ttl))
    finally:
        plane.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
