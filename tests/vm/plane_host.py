"""The control plane on the host for the product's VM tests: HTTPS on loopback with a test
CA whose server certificate also names the guests' forward address, so a guest reaches it
as ``https://10.0.2.100:8700`` (its public URL) through a guest forward and a relay.

It runs in a thread of its own (an anyio blocking portal), since the VM harness blocks;
the tests call it through a synchronous httpx client and run async code (viewers) with
``plane.portal.call``. Every guest gets its own relay (`plane.forward()`), which a test
can switch off to make the control plane unreachable for that guest alone.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.app import bind_socket, create_app, serve_control_plane
from control_plane.plane import ControlPlane
from control_plane.providers.qemu.command import GUEST_FORWARD_ADDRESS, GuestForward
from control_plane.settings import ControlPlaneSettings
from tests.cloud_init.helpers import files_by_path
from tests.tlsca import TlsFiles, make_tls_files
from tests.vm.relay import Relay

GUEST_PLANE_PORT = 8700
PUBLIC_URL = f"https://{GUEST_FORWARD_ADDRESS}:{GUEST_PLANE_PORT}"
BOOTSTRAP_TOKEN_PATH = "/etc/vm-agent/bootstrap-token"
ARTIFACTS_PREFIX = "/artifacts/"


@dataclass
class ArtifactsWatch:
    """Which artifacts were served whole (host monotonic time), and a callback for each."""

    served: dict[str, float] = field(default_factory=dict)
    on_served: list[Callable[[str], None]] = field(default_factory=list)

    def note(self, name: str) -> None:
        self.served.setdefault(name, time.monotonic())
        for callback in list(self.on_served):
            callback(name)


class _WatchArtifacts:
    """ASGI middleware: tells the watch when an artifact's last byte has been handed on."""

    def __init__(self, app: ASGIApp, watch: ArtifactsWatch) -> None:
        self.app = app
        self.watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(ARTIFACTS_PREFIX):
            await self.app(scope, receive, send)
            return
        name = path.removeprefix(ARTIFACTS_PREFIX)
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            await send(message)
            if message["type"] == "http.response.start":
                status = int(message["status"])
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and status == 200:  # all of it went out
                self.watch.note(name)

        await self.app(scope, receive, sending)


@dataclass(frozen=True)
class CreatedNode:
    node_id: str
    user_data: str
    answer: dict[str, Any]

    @property
    def bootstrap_token(self) -> str:
        """As the VM finds it: the file cloud-init writes from the user-data."""
        return str(files_by_path(self.user_data)[BOOTSTRAP_TOKEN_PATH]["content"]).strip()


class HostPlane:
    def __init__(
        self,
        *,
        portal: BlockingPortal,
        settings: ControlPlaneSettings,
        tls: TlsFiles,
        port: int,
        app_plane: ControlPlane,
        watch: ArtifactsWatch,
    ) -> None:
        self.portal = portal
        self.settings = settings
        self.tls = tls
        self.port = port
        self.plane = app_plane
        self.watch = watch
        self.url = f"https://127.0.0.1:{port}"
        self.http = httpx.Client(
            base_url=self.url, verify=tls.client_context(), timeout=30, trust_env=False
        )
        self._relays: list[Relay] = []
        self._lock = threading.Lock()

    # tokens and calls

    def admin(self) -> dict[str, str]:
        token = self.plane.tokens.mint_user_token("vm-test-admin", admin=True)
        return {"Authorization": f"Bearer {token}"}

    def viewer_token(
        self, node_id: str, subject: str, scopes: tuple[str, ...] = ("read", "write")
    ) -> str:
        return self.plane.tokens.mint_viewer_token(node_id, list(scopes), subject=subject)

    def create_node(self, **body: Any) -> CreatedNode:
        answer = self.http.post("/api/nodes", json=body, headers=self.admin())
        assert answer.status_code == 201, answer.text
        data = answer.json()
        return CreatedNode(data["node_id"], data["user_data"], data)

    def node(self, node_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/api/nodes/{node_id}", headers=self.admin())
        if answer.status_code == 404:
            return {}
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def provisioning(self, node_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/api/nodes/{node_id}/provisioning", headers=self.admin())
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def make_session(self, node_id: str, agent: str, owner: str) -> str:
        """An agent session the control plane makes (the only kind it gives credentials
        for); its id is what the daemon's session/start is given."""
        answer = self.http.post(
            f"/api/nodes/{node_id}/sessions",
            json={"agent": agent, "owner": owner},
            headers=self.admin(),
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["sessionId"])

    def node_ca_pem(self) -> str:
        answer = self.http.get("/api/node-ca.pem")
        assert answer.status_code == 200, answer.text
        return answer.text

    def node_ca_context(self) -> ssl.SSLContext:
        """What a viewer trusts: the node CA the control plane publishes, nothing else."""
        return ssl.create_default_context(cadata=self.node_ca_pem())

    def bootstrap(self, node_id: str, token: str, csr: str) -> httpx.Response:
        return self.http.post(
            f"/api/nodes/{node_id}/bootstrap",
            json={"csr": csr},
            headers={"Authorization": f"Bearer {token}"},
        )

    def set_agent_secrets(self, secrets: dict[str, dict[str, str]]) -> None:
        """The secret store (a file the control plane reads at each lookup), 0600."""
        path = self.settings.secrets_file
        assert path is not None
        path.touch(mode=0o600)
        path.write_text(json.dumps(secrets))

    def run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run async code (a viewer) in the control plane's event loop thread."""
        return self.portal.call(fn)

    # forwards

    def forward(self) -> tuple[GuestForward, Relay]:
        """A guest forward to this control plane through a relay of the guest's own."""
        relay = Relay(self.port)
        with self._lock:
            self._relays.append(relay)
        return GuestForward(GUEST_PLANE_PORT, relay.port), relay

    def close(self) -> None:
        self.http.close()
        with self._lock:
            relays, self._relays = self._relays, []
        for relay in relays:
            relay.close()


def plane_settings(
    state_dir: Path, artifacts_dir: Path, tls: TlsFiles, **extra: Any
) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        state_dir=state_dir,
        public_url=PUBLIC_URL,
        artifacts_dir=artifacts_dir,
        user_data_ca_file=tls.ca_file,
        tls_cert_file=tls.cert_file,
        tls_key_file=tls.key_file,
        key_activation_delay_s=0,
        secrets_file=state_dir.parent / "agent-secrets.json",
        **extra,
    )


def plane_tls(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 (the host's side) and 10.0.2.100."""
    return make_tls_files(
        directory, ca_name="vm-test control plane CA", extra_ips=(GUEST_FORWARD_ADDRESS,)
    )


@contextlib.contextmanager
def host_plane(
    portal: BlockingPortal,
    state_dir: Path,
    artifacts_dir: Path,
    tls: TlsFiles,
    app_options: Callable[[int], dict[str, Any]] | None = None,
    **extra: Any,
) -> Iterator[HostPlane]:
    """``app_options(port)``: more of `create_app`'s options, once the port is known (the
    qemu provider's guest forward to this control plane)."""
    settings = plane_settings(state_dir, artifacts_dir, tls, **extra)
    sock = bind_socket()
    port = sock.getsockname()[1]
    app = create_app(settings, **(app_options(port) if app_options else {}))
    watch = ArtifactsWatch()
    app.add_middleware(_WatchArtifacts, watch=watch)
    plane = app.state.plane
    try:
        with portal.wrap_async_context_manager(serve_control_plane(settings, app=app, sock=sock)):
            served = HostPlane(
                portal=portal, settings=settings, tls=tls, port=port, app_plane=plane, watch=watch
            )
            served.set_agent_secrets({})
            try:
                yield served
            finally:
                served.close()
    finally:
        plane.close()
