"""Fixtures for the GitHub tests: the App's RSA key, a GitHub stand-in on loopback with
one organisation's installation and real bare repositories, and git run as a user would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control_plane.settings import ControlPlaneSettings
from tests.control_plane.conftest import database_url, engine  # noqa: F401 (fixtures)
from tests.github_standin.api import serve
from tests.github_standin.state import GitHubStandIn

APP_ID = 4711
ACME = 31337  # GitHub's id of the acme organisation's installation
OTHER = 90001  # another organisation's installation of the same App


@dataclass
class Hub:
    state: GitHubStandIn
    url: str
    app_key_pem: bytes


@pytest.fixture(scope="session")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
async def hub(tmp_path: Path, app_key: rsa.RSAPrivateKey) -> AsyncIterator[Hub]:
    state = GitHubStandIn(tmp_path / "github", APP_ID, app_key.public_key())
    state.add_installation(ACME, "acme")
    state.add_installation(OTHER, "globex")
    async with serve(state) as url:
        state.add_repository(ACME, "acme/widgets", files={"README.md": "widgets\n"})
        state.add_repository(ACME, "acme/gadgets")
        state.add_repository(OTHER, "globex/secret")
        yield Hub(state, url, pem(app_key))


async def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """git as a user runs it: no system or global config, never a prompt. Run in a thread:
    the stand-in answering it serves on this event loop."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Agent",
        "GIT_AUTHOR_EMAIL": "agent@example.invalid",
        "GIT_COMMITTER_NAME": "Agent",
        "GIT_COMMITTER_EMAIL": "agent@example.invalid",
    }
    return await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=check
        )
    )


def remote(url: str, token: str, full_name: str) -> str:
    host = url.removeprefix("http://")
    return f"http://x-access-token:{token}@{host}/{full_name}.git"


@pytest.fixture
def cp_settings(tmp_path: Path, database_url: str, hub: Hub) -> ControlPlaneSettings:  # noqa: F811
    """A control plane (SQLite or PostgreSQL) acting as the App against the stand-in."""
    key = tmp_path / "app-key.pem"
    key.touch(mode=0o600)
    key.write_bytes(hub.app_key_pem)
    return ControlPlaneSettings(
        state_dir=tmp_path / "cp-state",
        public_url="http://127.0.0.1:1",
        database_url=database_url,
        key_activation_delay_s=0,
        github_api_url=hub.url,
        github_app_id=APP_ID,
        github_app_private_key_file=key,
        github_max_wait_s=0.01,
    )
