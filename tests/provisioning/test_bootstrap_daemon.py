"""`vm-agent serve` as a real process on its first start: it trades the bootstrap token,
reports ready, restarts without it, waits out an unreachable control plane (extending
systemd's start timeout, feeding the watchdog) and stops with status 2 on a refusal."""

from __future__ import annotations

import stat
from pathlib import Path

import anyio
import pytest

from control_plane.app import bind_socket
from tests.daemon.harness import start_process, vm_agent
from tests.provisioning.daemon import NODE, env_for, notifications, ready_at_plane, stop
from tests.provisioning.fixtures import BuiltArtifacts
from tests.provisioning.pki import csr_pem
from tests.provisioning.plane import plane_settings, reserved_port, serve
from tests.token_files import write_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]


async def node_with_token(tmp: Path, artifacts: BuiltArtifacts) -> str:
    """Makes the node on a control plane that then goes away (as a provider boots it later)."""
    sock = bind_socket()
    async with serve(sock, plane_settings(tmp / "cp", sock.getsockname()[1], artifacts)) as cp:
        token = await cp.create_node(NODE)
    (tmp / "etc").mkdir(exist_ok=True)
    write_token(tmp / "etc" / "bootstrap-token", token)
    return token


async def test_first_start_trades_the_token_and_a_restart_needs_none(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    token = await node_with_token(tmp_path, artifacts)
    sock = bind_socket()
    port = sock.getsockname()[1]
    log = tmp_path / "daemon.log"
    async with (
        serve(sock, plane_settings(tmp_path / "cp", port, artifacts)) as cp,
        notifications() as notify,
    ):
        process = await start_process(vm_agent("serve"), env_for(tmp_path, port, notify), log)
        await notify.wait_for("READY=1")
        first_ready = await ready_at_plane(cp)
        etc = tmp_path / "etc"
        assert not (etc / "bootstrap-token").exists()
        assert stat.S_IMODE((etc / "callback-token").stat().st_mode) == 0o600
        assert stat.S_IMODE((etc / "node-key.pem").stat().st_mode) == 0o600
        assert (etc / "node-cert.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert await stop(process) == 0

        start = len(notify.messages)
        process = await start_process(vm_agent("serve"), env_for(tmp_path, port, notify), log)
        await notify.wait_for("READY=1", start=start)
        await ready_at_plane(cp, after=first_ready)
        assert await stop(process) == 0
        assert not any(m.startswith("EXTEND_TIMEOUT_USEC") for m in notify.fields()[start:])
    text = log.read_text()
    assert token not in text
    assert (etc / "callback-token").read_text().strip() not in text


async def test_an_unreachable_control_plane_is_waited_for_then_ready(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    await node_with_token(tmp_path, artifacts)
    sock = reserved_port()
    port = sock.getsockname()[1]
    async with notifications() as notify:
        env = env_for(tmp_path, port, notify)
        process = await start_process(vm_agent("serve"), env, tmp_path / "daemon.log")
        await notify.wait_for(r"STATUS=bootstrap: waiting for the control plane .*attempt 3,.*")
        waiting = len(notify.messages)
        await notify.wait_for("WATCHDOG=1", start=waiting)  # fed while it waits
        await notify.wait_for(r"EXTEND_TIMEOUT_USEC=\d+", start=waiting)
        assert "READY=1" not in notify.fields()
        async with serve(sock, plane_settings(tmp_path / "cp", port, artifacts)) as cp:
            await notify.wait_for("READY=1", start=waiting)
            await ready_at_plane(cp)
            assert await stop(process) == 0


async def test_a_spent_token_stops_the_daemon_with_status_2_saying_why(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    token = await node_with_token(tmp_path, artifacts)
    sock = bind_socket()
    port = sock.getsockname()[1]
    async with (
        serve(sock, plane_settings(tmp_path / "cp", port, artifacts)) as cp,
        notifications() as notify,
    ):
        spend = await cp.http.post(
            f"/api/nodes/{NODE}/bootstrap",
            json={"csr": csr_pem()},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert spend.status_code == 200
        log = tmp_path / "daemon.log"
        process = await start_process(vm_agent("serve"), env_for(tmp_path, port, notify), log)
        with anyio.fail_after(60):
            status = await process.wait()
        assert status == 2
        text = log.read_text()
        assert "bootstrap token already used" in text and "needs a new bootstrap token" in text
        assert token not in text
        await notify.wait_for(r"STATUS=failed: bootstrap: .*already used.*")
        assert "READY=1" not in notify.fields()
        assert sum(f.startswith("EXTEND_TIMEOUT_USEC") for f in notify.fields()) == 1  # one try


async def test_a_bootstrap_without_tls_files_is_refused_before_anything(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    write_token(tmp_path / "etc" / "bootstrap-token", "x" * 43)
    async with notifications() as notify:
        env = env_for(tmp_path, 9, notify)
        del env["VM_AGENT_TLS_CERT_FILE"], env["VM_AGENT_TLS_KEY_FILE"], env["VM_AGENT_TLS_RENEW"]
        log = tmp_path / "daemon.log"
        process = await start_process(vm_agent("serve"), env, log)
        with anyio.fail_after(60):
            assert await process.wait() == 2
    assert "VM_AGENT_TLS_CERT_FILE and VM_AGENT_TLS_KEY_FILE are required" in log.read_text()
