"""The GitHub stand-in (tests/github_standin) on the host for the VM tests: the host's
control plane calls its REST API on plain HTTP over loopback, and a guest's git reaches
its smart-HTTP side through a guest forward, as ``https://10.0.2.100:8443``.

A guest is not on loopback, so its git gets HTTPS, as from GitHub: the same app served a
second time with a certificate of a CA of the stand-in's own (not the control plane's:
trusting it must not make a guest trust anything else). A test puts that CA in the
guest's system store (`trust_in`), as an operator does for a GitHub Enterprise on a
private CA: git (the agent's and the daemon's) verifies against that store.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from anyio.from_thread import BlockingPortal
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control_plane.app import bind_socket
from control_plane.providers.qemu.command import GUEST_FORWARD_ADDRESS, GuestForward
from control_plane.serving import uvicorn_serving
from tests.github_standin.api import make_app, serve
from tests.github_standin.state import GitHubStandIn
from tests.tlsca import TlsFiles, make_tls_files
from tests.vm.machine import VM

GUEST_GITHUB_PORT = 8443
APP_ID = 4711
ACME = 31337  # GitHub's id of the acme organisation's installation of the App
REPOSITORY = "acme/widgets"
# the configured author of a task's commits (CONTROL_PLANE_GITHUB_COMMIT_AUTHOR_*)
AUTHOR_NAME = "vm-test bot"
AUTHOR_EMAIL = "vm-test-bot@example.invalid"
GUEST_CA_FILE = "/usr/local/share/ca-certificates/vm-test-github.crt"


@dataclass(frozen=True)
class GitHubHost:
    state: GitHubStandIn
    api_url: str  # http://127.0.0.1:N: the control plane's REST calls
    git_port: int  # the HTTPS side's host port: the guest forward's target
    tls: TlsFiles
    app_key_file: Path

    @property
    def guest_git_url(self) -> str:
        """Where a guest's git finds the repositories: `{url}/owner/name.git`."""
        return f"https://{GUEST_FORWARD_ADDRESS}:{GUEST_GITHUB_PORT}"

    def forward(self) -> GuestForward:
        return GuestForward(GUEST_GITHUB_PORT, self.git_port)

    def plane_settings(self) -> dict[str, Any]:
        """The control plane's GitHub App against this stand-in."""
        return {
            "github_app_id": APP_ID,
            "github_app_private_key_file": self.app_key_file,
            "github_api_url": self.api_url,
            "github_git_url": self.guest_git_url,
            "github_commit_author_name": AUTHOR_NAME,
            "github_commit_author_email": AUTHOR_EMAIL,
        }

    def trust_in(self, vm: VM) -> None:
        """The stand-in's CA in the guest's system store (what git verifies against)."""
        vm.write_file(GUEST_CA_FILE, self.tls.ca_file.read_bytes())
        vm.sh(f"chmod 0644 {shlex.quote(GUEST_CA_FILE)} && update-ca-certificates", check=True)

    def issued_tokens(self) -> list[str]:
        return list(self.state.tokens)


@contextlib.asynccontextmanager
async def _served(state: GitHubStandIn, tls: TlsFiles) -> AsyncIterator[tuple[str, int]]:
    sock = bind_socket("127.0.0.1", 0)
    config = uvicorn.Config(
        make_app(state),
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(tls.cert_file),
        ssl_keyfile=str(tls.key_file),
    )
    try:
        async with serve(state) as url, uvicorn_serving(config, [sock], "GitHub stand-in (TLS)"):
            yield url, int(sock.getsockname()[1])
    finally:
        sock.close()


@contextlib.contextmanager
def github_stand_in(portal: BlockingPortal, directory: Path) -> Iterator[GitHubHost]:
    """One installation (acme's) holding one real bare repository, `acme/widgets`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = directory / "app-key.pem"
    directory.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls = make_tls_files(
        directory / "tls", ca_name="vm-test GitHub CA", extra_ips=(GUEST_FORWARD_ADDRESS,)
    )
    state = GitHubStandIn(directory / "repos", APP_ID, key.public_key())
    state.add_installation(ACME, "acme")
    state.add_repository(ACME, REPOSITORY, files={"README.md": "widgets\n"})
    with portal.wrap_async_context_manager(_served(state, tls)) as (url, git_port):
        yield GitHubHost(state, url, git_port, tls, key_file)
