"""The daemon's bootstrap exchange (vm_agent.control_link.bootstrap) against the real control
plane on loopback: the files it leaves, waiting out an unreachable control plane, refusals."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import anyio
import pytest

from control_plane.app import bind_socket
from tests.daemon.harness import notify_socket
from tests.provisioning.fixtures import BuiltArtifacts
from tests.provisioning.pki import handshake
from tests.provisioning.plane import DOMAIN, plane_settings, reserved_port, serve
from tests.token_files import write_token
from vm_agent.common.redact import Redactor
from vm_agent.control_link.bootstrap import (
    BootstrapFiles,
    Bootstrapper,
    BootstrapRefused,
    BootstrapTimings,
    load_or_make_key,
)
from vm_agent.control_link.token import CallbackTokenStore, InsecureTokenFile
from vm_agent.runtime.sdnotify import SdNotifier

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
QUICK = BootstrapTimings(initial_s=0.05, max_s=0.2, request_timeout_s=10, connect_timeout_s=5)


def files(tmp: Path) -> BootstrapFiles:
    etc = tmp / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    return BootstrapFiles(
        bootstrap_token=etc / "bootstrap-token",
        callback_token=etc / "callback-token",
        tls_cert=etc / "node-cert.pem",
        tls_key=etc / "node-key.pem",
    )


def bootstrapper(
    url: str,
    where: BootstrapFiles,
    notifier: SdNotifier | None = None,
    redactor: Redactor | None = None,
) -> Bootstrapper:
    return Bootstrapper(
        control_plane_url=url,
        node_id="node-1",
        files=where,
        notifier=notifier or SdNotifier(None),
        redactor=redactor or Redactor(),
        timings=QUICK,
    )


async def test_first_start_leaves_the_callback_token_key_and_certificate(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    sock = bind_socket()
    settings = plane_settings(tmp_path / "cp", sock.getsockname()[1], artifacts)
    async with serve(sock, settings) as cp:
        where = files(tmp_path)
        write_token(where.bootstrap_token, await cp.create_node("node-1"))
        redactor = Redactor()
        bootstrap_token = where.bootstrap_token.read_text().strip()
        store = await bootstrapper(cp.url, where, redactor=redactor).run()

        assert not where.bootstrap_token.exists()
        for path, mode in [
            (where.callback_token, 0o600),
            (where.tls_key, 0o600),
            (where.tls_cert, 0o644),
        ]:
            assert stat.S_IMODE(path.stat().st_mode) == mode, path
        assert CallbackTokenStore.load(where.callback_token).value == store.value
        # Both tokens are secrets the logs never show.
        assert bootstrap_token not in redactor.redact(f"x {bootstrap_token} {store.value}")
        assert store.value not in redactor.redact(f"x {store.value}")

        ready = await cp.http.post(
            "/api/nodes/node-1/ready",
            json={"version": "t"},
            headers={"Authorization": f"Bearer {store.value}"},
        )
        assert ready.status_code == 200
        ca = (await cp.http.get("/api/node-ca.pem")).text
        key = load_or_make_key(where.tls_key)  # the key the daemon made, reused
        result = handshake(where.tls_cert.read_text(), key, ca, f"node-1.{DOMAIN}", tmp_path)
        assert result == "ok"
        assert (await cp.provisioning("node-1"))["bootstrapped_at"] is not None


async def test_an_unreachable_control_plane_is_waited_for(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    sock = reserved_port()
    port = sock.getsockname()[1]
    settings = plane_settings(tmp_path / "cp", port, artifacts)
    where = files(tmp_path)
    # The node is made first (on another port), as the provider would boot it later.
    first = bind_socket()
    async with serve(
        first, plane_settings(tmp_path / "cp", first.getsockname()[1], artifacts)
    ) as cp:
        write_token(where.bootstrap_token, await cp.create_node("node-1"))
    with tempfile.TemporaryDirectory(prefix="vmpv-") as short:
        async with notify_socket(Path(short) / "notify") as notify:
            notifier = SdNotifier(str(notify.path))
            node = bootstrapper(f"http://127.0.0.1:{port}", where, notifier)
            result: list[CallbackTokenStore] = []
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    result.append(await node.run())

                tg.start_soon(run)
                await notify.wait_for(
                    r"STATUS=bootstrap: waiting for the control plane .*attempt 3.*"
                )
                assert not where.callback_token.exists()
                async with serve(sock, settings):
                    with anyio.fail_after(60):
                        while not result:
                            await anyio.sleep(0.05)
            notifier.close()
    assert result and where.callback_token.exists() and not where.bootstrap_token.exists()
    assert node.attempts >= 4
    extensions = [f for f in notify.fields() if f.startswith("EXTEND_TIMEOUT_USEC=")]
    assert len(extensions) == node.attempts  # one before every try
    assert all(int(f.split("=")[1]) >= 15_000_000 for f in extensions)


async def test_a_spent_or_wrong_token_is_refused_at_once(
    tmp_path: Path, artifacts: BuiltArtifacts
) -> None:
    sock = bind_socket()
    settings = plane_settings(tmp_path / "cp", sock.getsockname()[1], artifacts)
    async with serve(sock, settings) as cp:
        token = await cp.create_node("node-1")
        spent = files(tmp_path / "a")
        write_token(spent.bootstrap_token, token)
        await bootstrapper(cp.url, spent).run()
        again = files(tmp_path / "b")
        write_token(again.bootstrap_token, token)
        node = bootstrapper(cp.url, again)
        with pytest.raises(BootstrapRefused, match="bootstrap token already used") as caught:
            await node.run()
        assert node.attempts == 1
        assert token not in str(caught.value)
        assert "needs a new bootstrap token" in str(caught.value)
        assert again.bootstrap_token.exists() and not again.callback_token.exists()

        wrong = files(tmp_path / "c")
        write_token(wrong.bootstrap_token, "x" * 43)
        with pytest.raises(BootstrapRefused, match="bootstrap token refused"):
            await bootstrapper(cp.url, wrong).run()


async def test_an_insecure_bootstrap_token_file_is_not_used(tmp_path: Path) -> None:
    where = files(tmp_path)
    write_token(where.bootstrap_token, "x" * 43, mode=0o644)
    with pytest.raises(InsecureTokenFile, match="bootstrap token file"):
        await bootstrapper("http://127.0.0.1:9", where).run()
