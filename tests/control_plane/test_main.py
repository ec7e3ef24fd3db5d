"""`python -m control_plane`: serve in a real process, mint a token that it accepts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_and_mint_in_processes(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CONTROL_PLANE_STATE_DIR": str(tmp_path / "state"),
        "CONTROL_PLANE_DATABASE_URL": database_url,
    }
    mint = subprocess.run(
        [
            sys.executable,
            "-m",
            "control_plane",
            "--public-url",
            f"http://127.0.0.1:{port}",
            "mint",
            "callback",
            "node-7",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    token = mint.stdout.strip()
    proc = subprocess.Popen(
        [sys.executable, "-m", "control_plane", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"control plane listening on http://127.0.0.1:{port}", line + (
            proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
        )
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/nodes/node-7/ready",
            json={"version": "1", "capacity": {}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.json() == {"ok": True}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
