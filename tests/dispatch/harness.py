"""A control plane (in this process, with its dispatcher) and a real `vm-agent serve`
daemon (a subprocess on loopback, the fake agent), wired as a node: the daemon reports
to the control plane, and the control plane reaches the daemon's `/v1/ws` as a viewer."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import Process
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from control_plane.app import bind_socket, create_app, serve_control_plane
from control_plane.dispatch.addresses import record_address
from control_plane.dispatch.loop import DispatchSettings
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings
from control_plane.storage import provisioning_store
from control_plane.storage.node_store import get_node
from tests.daemon.harness import NODE, Plane, notify_socket, serving, stopped_at_exit
from tests.tlsca import make_tls_files
from tests.token_files import write_token
from vm_agent.process.catalog import fake_agent_command

FAST = DispatchSettings(pass_interval_s=0.05, lease_s=10, resend_after_s=2, call_limit_s=10)
WAIT_S = 60.0


def write_agents(path: Path, state: Path, **agents: tuple[str, ...]) -> Path:
    lines = []
    for name, args in agents.items():
        command = list(fake_agent_command(*args, "--state-dir", str(state)))
        quoted = ", ".join(f'"{a}"' for a in command)
        lines += [f"[agents.{name.replace('_', '-')}]", f"command = [{quoted}]", ""]
    path.write_text("\n".join(lines))
    return path


AGENTS: dict[str, tuple[str, ...]] = {
    "fake": ("--scenario", "echo"),
    "fake_tools": ("--scenario", "tools"),
    "fake_commit": ("--scenario", "commit"),  # writes a file, commits it with git
    "fake_slow": ("--scenario", "slow", "--chunks", "200", "--delay-ms", "50"),
    "fake_auth": ("--scenario", "echo", "--auth-on", "session/new"),
    # crashes mid-prompt and cannot load sessions: not recoverable
    "fake_crash": ("--scenario", "no-load"),
}


# The daemon's certificate and key files (PEM) for a control plane: TLS on its port.
TlsFor = Callable[[ControlPlane, Path], tuple[Path, Path]]


def _signed_by_the_node_ca(
    plane: ControlPlane, directory: Path, *, on_record: bool
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = time.time()
    signed = plane.node_ca.sign(key.public_key(), NODE, now, 3600)
    if on_record:
        # as the bootstrap leaves it: the dispatcher accepts only that certificate
        provisioning_store.create_node(
            plane.engine,
            provisioning_store.NewNode(
                node_id=NODE, hostname=NODE, dns_name=plane.node_ca.dns_name(NODE),
                created_at=now, created_by="test", params={},
                bootstrap_token_sha256="0" * 64, bootstrap_expires_at=now + 600,
            ),
        )  # fmt: skip
        issued = provisioning_store.IssuedCertificate(
            signed.serial, signed.sha256, signed.not_after, signed.public_key_sha256
        )
        assert provisioning_store.spend_bootstrap_token(plane.engine, NODE, "0" * 64, now, issued)
    cert_file, key_file = directory / "node.pem", directory / "node.key"
    cert_file.write_text(signed.pem)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_file, key_file


def node_ca_tls(plane: ControlPlane, directory: Path) -> tuple[Path, Path]:
    """A certificate the control plane's node CA signed for the node, as the bootstrap
    gives a VM (and records it)."""
    return _signed_by_the_node_ca(plane, directory, on_record=True)


def unrecorded_tls(plane: ControlPlane, directory: Path) -> tuple[Path, Path]:
    """A certificate the node CA signed but that is not the one on record (an earlier or a
    stolen one): TLS verifies it, the record check refuses it."""
    return _signed_by_the_node_ca(plane, directory, on_record=False)


def foreign_tls(_plane: ControlPlane, directory: Path) -> tuple[Path, Path]:
    """A certificate another CA signed (for 127.0.0.1 and localhost)."""
    files = make_tls_files(directory)
    return files.cert_file, files.key_file


@dataclass
class Stack:
    url: str
    plane: ControlPlane
    client: httpx.AsyncClient
    daemon: Process
    viewer_url: str

    def user(self, user_id: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.plane.tokens.mint_user_token(user_id)}"}

    async def submit(self, user: str = "alice", **body: Any) -> dict[str, Any]:
        r = await self.client.post("/api/tasks", json=body, headers=self.user(user))
        assert r.status_code == 201, r.text
        made: dict[str, Any] = r.json()
        return made

    async def task(self, task_id: str, user: str = "alice") -> dict[str, Any]:
        r = await self.client.get(f"/api/tasks/{task_id}", headers=self.user(user))
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    async def until(
        self, task_id: str, *statuses: str, within_s: float = WAIT_S, user: str = "alice"
    ) -> dict[str, Any]:
        """The task once its status is one of `statuses` (each change is polled, not slept)."""
        found: dict[str, Any] = {}
        with anyio.move_on_after(within_s):
            while True:
                found = await self.task(task_id, user)
                if found["status"] in statuses:
                    return found
                await anyio.sleep(0.05)
        raise AssertionError(f"task {task_id} never reached {statuses}: {found}")

    async def eventually(
        self, task_id: str, check: Callable[[dict[str, Any]], bool], within_s: float = WAIT_S
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with anyio.move_on_after(within_s):
            while not check(found := await self.task(task_id)):
                await anyio.sleep(0.05)
            return found
        raise AssertionError(f"task {task_id} never passed the check: {found}")

    async def events_until(
        self, task_id: str, event_type: str, within_s: float = WAIT_S, user: str = "alice"
    ) -> list[dict[str, Any]]:
        """The task's events once one of `event_type` is among them (the outbox is async)."""
        events: list[dict[str, Any]] = []
        with anyio.move_on_after(within_s):
            while True:
                events = await self.events(task_id, user=user)
                if any(e["type"] == event_type for e in events):
                    return events
                await anyio.sleep(0.05)
        raise AssertionError(f"no {event_type} among {events}")

    async def events(
        self, task_id: str, after: int = 0, user: str = "alice"
    ) -> list[dict[str, Any]]:
        r = await self.client.get(
            f"/api/tasks/{task_id}/events?after={after}", headers=self.user(user)
        )
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = r.json()["events"]
        return events


@asynccontextmanager
async def stack(
    tmp_path: Path,
    database_url: str | None = None,
    dispatch: DispatchSettings = FAST,
    tls: TlsFor | None = None,
    plane_settings: dict[str, Any] | None = None,
    *,
    extra_agents: str = "",
    **daemon_env: str,
) -> AsyncIterator[Stack]:
    """``extra_agents``: catalog entries (TOML) added to the fake agents (a real agent's)."""
    sock = bind_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "cp",
        public_url=url,
        database_url=database_url,
        key_activation_delay_s=0,
        heartbeat_interval_s=1,
        **(plane_settings or {}),
    )
    app = create_app(settings, dispatch=dispatch)
    plane: ControlPlane = app.state.plane
    if tls is not None:
        cert, key = tls(plane, tmp_path / "tls")
        daemon_env = {
            **daemon_env,
            "VM_AGENT_TLS_CERT_FILE": str(cert),
            "VM_AGENT_TLS_KEY_FILE": str(key),
        }
    agents = write_agents(tmp_path / "agents.toml", tmp_path / "agent-state", **AGENTS)
    if extra_agents:
        agents.write_text(agents.read_text() + "\n" + extra_agents)
    write_token(tmp_path / "callback-token", plane.tokens.mint_callback_token(NODE))
    try:
        with tempfile.TemporaryDirectory(prefix="vmad-") as short:
            async with (
                serve_control_plane(settings, app=app, sock=sock) as base,
                notify_socket(Path(short) / "notify") as notify,
                httpx.AsyncClient(base_url=base, timeout=30) as client,
            ):
                process, viewer_url = await serving(
                    tmp_path, Plane(base, plane), notify, agents, **daemon_env
                )
                async with stopped_at_exit(process):
                    record_address(plane.engine, NODE, viewer_url, str(tmp_path), time.time())
                    with anyio.fail_after(WAIT_S):  # placement takes only a node that reported
                        while not (get_node(plane.engine, NODE) or {}).get("ready_at"):
                            await anyio.sleep(0.05)
                    yield Stack(base, plane, client, process, viewer_url)
    finally:
        plane.close()
