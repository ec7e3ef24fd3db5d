"""`vm-agent serve` on its first start, for the bootstrap tests: its environment, systemd's
notify socket, and waiting for the control plane to have heard `ready`."""

from __future__ import annotations

import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc

from control_plane.identity.tokens import jwks_url
from tests.daemon.harness import Notify, base_env, notify_socket
from tests.provisioning.plane import Served

NODE = "node-1"


@asynccontextmanager
async def notifications() -> AsyncIterator[Notify]:
    # AF_UNIX paths are short (108 bytes): the socket lives in a short temp dir.
    with tempfile.TemporaryDirectory(prefix="vmpv-") as short:
        async with notify_socket(Path(short) / "notify") as notify:
            yield notify


def env_for(tmp: Path, port: int, notify: Notify, **extra: str) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    etc = tmp / "etc"
    env = base_env()
    env.update(
        {
            "VM_AGENT_ENV_FILE": str(tmp / "no-env-file"),
            "VM_AGENT_NODE_ID": NODE,
            "VM_AGENT_CONTROL_PLANE_URL": url,
            "VM_AGENT_JWKS_URL": jwks_url(url),
            "VM_AGENT_CALLBACK_TOKEN_FILE": str(etc / "callback-token"),
            "VM_AGENT_BOOTSTRAP_TOKEN_FILE": str(etc / "bootstrap-token"),
            "VM_AGENT_TLS_CERT_FILE": str(etc / "node-cert.pem"),
            "VM_AGENT_TLS_KEY_FILE": str(etc / "node-key.pem"),
            "VM_AGENT_TLS_RENEW": "1",  # as the cloud-config sets it
            "VM_AGENT_STATE_DIR": str(tmp / "state"),
            "VM_AGENT_LISTEN_HOST": "127.0.0.1",
            "VM_AGENT_LISTEN_PORT": "0",
            "VM_AGENT_BOOTSTRAP_RETRY_INITIAL_S": "0.05",
            "VM_AGENT_BOOTSTRAP_RETRY_MAX_S": "0.3",
            "NOTIFY_SOCKET": str(notify.path),
            "WATCHDOG_USEC": "400000",
            # These tests are about the first start, not containment (tests/containment/):
            # agents may run as the daemon's user, under the test's directory.
            "VM_AGENT_WORKSPACE_ROOTS": str(tmp),
            "VM_AGENT_AGENTS_AS_ROOT": "1",
        }
    )
    env.update(extra)
    return env


async def ready_at_plane(cp: Served, after: float | None = None) -> float:
    with anyio.fail_after(60):
        while True:
            ready = (await cp.node(NODE))["ready_at"]
            if ready is not None and (after is None or ready > after):
                return float(ready)
            await anyio.sleep(0.1)


async def stop(process: anyio.abc.Process) -> int:
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(60):
        return await process.wait()
