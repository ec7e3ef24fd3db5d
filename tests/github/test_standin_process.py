"""The stand-in as its own process (`python -m tests.github_standin`): what a control
plane in another process, or a VM through a forward, would talk to."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from control_plane.github.app import app_from_settings
from control_plane.github.rules import parse_repository
from control_plane.settings import ControlPlaneSettings
from tests.github.conftest import git, remote
from tests.processes import child_process, stopped_by

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


async def test_a_control_plane_gets_a_token_from_the_standin_process(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tests.github_standin", "--root", str(tmp_path / "gh")]
    async with child_process([*argv, "--repo", "acme/widgets"], cwd=ROOT) as proc:
        assert proc.stdout is not None
        line = await BufferedByteReceiveStream(proc.stdout).receive_until(b"\n", 65536)
        told = json.loads(line)
        settings = ControlPlaneSettings(
            state_dir=tmp_path / "cp",
            public_url="http://127.0.0.1:1",
            github_api_url=told["url"],
            github_app_id=told["appId"],
            github_app_private_key_file=Path(told["appKeyFile"]),
        )
        app = app_from_settings(settings, time.time)
        assert app is not None
        installation = str(told["installations"]["acme"])
        token = await app.installation_token(installation, parse_repository("acme/widgets"))
        await git(
            "clone", "-q", remote(told["url"], token.token, "acme/widgets"), "w", cwd=tmp_path
        )
        assert (tmp_path / "w" / "README.md").exists()
        assert await stopped_by(proc, signal.SIGTERM) == 0
