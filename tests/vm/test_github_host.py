"""The GitHub stand-in as the VM tests serve it (tests/vm/github_host.py), on loopback (no
VM): git over its HTTPS side, verified against the stand-in's own CA and no other, with an
installation token scoped to the repository; the REST API on its plain-HTTP side; and
settings the control plane accepts (a guest's git URL is HTTPS, not loopback)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from anyio.from_thread import start_blocking_portal

from control_plane.settings import ControlPlaneSettings
from tests.vm.github_host import ACME, REPOSITORY, GitHubHost, github_stand_in


@pytest.fixture
def github(tmp_path: Path) -> Iterator[GitHubHost]:
    with start_blocking_portal() as portal, github_stand_in(portal, tmp_path / "gh") as host:
        yield host


def _git(cwd: Path, *args: str, ca: Path | None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        **({"GIT_SSL_CAINFO": str(ca)} if ca is not None else {}),
    }
    argv = ["git", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_git_over_https_trusts_the_stand_in_s_ca_and_a_scoped_token(
    github: GitHubHost, tmp_path: Path
) -> None:
    token = github.state.issue_token(ACME, {"repositories": ["widgets"]})["token"]
    url = f"https://x-access-token:{token}@127.0.0.1:{github.git_port}/{REPOSITORY}.git"
    cloned = _git(tmp_path, "clone", "-q", url, "w", ca=github.tls.ca_file)
    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "w" / "README.md").read_text() == "widgets\n"
    # without the stand-in's CA (the host's own store) the TLS side is not trusted
    refused = _git(tmp_path, "ls-remote", url, ca=None)
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower(), refused.stderr
    forged = url.replace(token, "ghs_forged")
    denied = _git(tmp_path, "ls-remote", forged, ca=github.tls.ca_file)
    assert denied.returncode != 0


def test_the_api_side_and_the_control_plane_s_settings(github: GitHubHost, tmp_path: Path) -> None:
    token = github.state.issue_token(ACME, {"repositories": ["widgets"]})["token"]
    answer = httpx.get(
        f"{github.api_url}/repos/{REPOSITORY}",
        headers={"Authorization": f"token {token}"},
        trust_env=False,
    )
    assert answer.status_code == 200 and answer.json()["full_name"] == REPOSITORY
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "cp", public_url="https://10.0.2.100:8700", **github.plane_settings()
    )
    assert settings.github_git_url == "https://10.0.2.100:8443"
    assert settings.github_api_url.startswith("http://127.0.0.1:")
    assert (github.forward().guest_port, github.forward().host_port) == (8443, github.git_port)
