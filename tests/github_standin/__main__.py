"""The GitHub stand-in as its own process, for a control plane in another process or a VM.

    python -m tests.github_standin --root DIR [--port N] [--repo owner/name ...]

makes the App's RSA key (DIR/app-key.pem, 0600), one installation per owner holding the
named repositories (real bare repositories under DIR), serves on 127.0.0.1 and prints
one JSON line: `{"url", "appId", "appKeyFile", "installations": {owner: id}}`. A control
plane then runs with CONTROL_PLANE_GITHUB_API_URL=url, _GITHUB_APP_ID, and
_GITHUB_APP_PRIVATE_KEY_FILE. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import anyio
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control_plane.app import bind_socket
from control_plane.serving import uvicorn_serving
from tests.github_standin.api import make_app
from tests.github_standin.state import GitHubStandIn

APP_ID = 4711


async def run(root: Path, port: int, repos: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = root / "app-key.pem"
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    state = GitHubStandIn(root / "repos", APP_ID, key.public_key())
    installations: dict[str, int] = {}
    for full_name in repos:
        owner = full_name.split("/")[0]
        if owner not in installations:
            installations[owner] = 31337 + len(installations)
            state.add_installation(installations[owner], owner)
        state.add_repository(installations[owner], full_name)
    sock = bind_socket("127.0.0.1", port)
    state.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(make_app(state), log_level="warning", lifespan="off")
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with uvicorn_serving(config, [sock], "GitHub stand-in"):
            line = {
                "url": state.base_url,
                "appId": APP_ID,
                "appKeyFile": str(key_file),
                "installations": installations,
            }
            print(json.dumps(line), flush=True)
            async for _ in signals:
                break
    sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.github_standin")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repo", action="append", default=[], help="owner/name (repeatable)")
    args = parser.parse_args(argv)
    anyio.run(run, args.root, args.port, args.repo or ["acme/widgets"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
