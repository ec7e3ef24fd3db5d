"""The daemon renews its certificate (vm_agent.control_link.renewal) against the real control
plane on loopback: after the bootstrap, a listener serving the node's TLS context hands new
connections the renewed certificate while an open one keeps working; a refusal changes
nothing and says why."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSListener, TLSStream
from cryptography import x509

from control_plane.app import bind_socket
from tests.provisioning.fixtures import BuiltArtifacts
from tests.provisioning.plane import DOMAIN, Served, plane_settings, serve
from tests.provisioning.test_bootstrap_exchange import bootstrapper, files
from tests.token_files import write_token
from vm_agent.control_link import renewal
from vm_agent.control_link.bootstrap import BootstrapFiles
from vm_agent.control_link.client import ControlPlaneClient, RetryPolicy
from vm_agent.control_link.renewal import (
    CertificateRenewer,
    RenewalFailed,
    RenewalTimings,
    renew_at,
    validity,
)
from vm_agent.control_link.token import CallbackTokenStore
from vm_agent.edge.tls import server_context

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
NAME = f"node-1.{DOMAIN}"


@pytest.mark.parametrize(
    ("not_before", "not_after", "due"),
    [(0.0, 90.0, 60.0), (100.0, 100.0, 100.0), (1000.0, 4000.0, 3000.0), (50.0, 10.0, 50.0)],
)
def test_renewal_is_due_at_two_thirds_of_the_life(
    not_before: float, not_after: float, due: float
) -> None:
    assert renew_at(not_before, not_after) == pytest.approx(due)


@asynccontextmanager
async def tls_listener(context: ssl.SSLContext) -> AsyncIterator[int]:
    """Serves `context` on 127.0.0.1: each connection echoes lines until closed."""

    async def echo(stream: TLSStream) -> None:
        async with stream:
            async for data in stream:
                await stream.send(data)

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    listener = TLSListener(tcp, context)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        yield int(tcp.extra(SocketAttribute.local_port))
        tg.cancel_scope.cancel()


async def connect(port: int, ca_pem: str) -> TLSStream:
    client = ssl.create_default_context(cadata=ca_pem)
    stream = await anyio.connect_tcp(
        "127.0.0.1", port, tls=True, ssl_context=client, tls_hostname=NAME
    )
    assert isinstance(stream, TLSStream)
    return stream


def served_serial(stream: TLSStream) -> int:
    der = stream.extra(TLSAttribute.peer_certificate_binary)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


@asynccontextmanager
async def bootstrapped(
    tmp: Path, artifacts: BuiltArtifacts
) -> AsyncIterator[tuple[Served, BootstrapFiles, CallbackTokenStore]]:
    sock = bind_socket()
    async with serve(sock, plane_settings(tmp / "cp", sock.getsockname()[1], artifacts)) as cp:
        where = files(tmp)
        write_token(where.bootstrap_token, await cp.create_node("node-1"))
        store = await bootstrapper(cp.url, where).run()
        yield cp, where, store


def renewer(
    client: ControlPlaneClient, where: BootstrapFiles, context: ssl.SSLContext, now: float
) -> CertificateRenewer:
    return CertificateRenewer(
        client,
        node_id="node-1",
        cert_file=where.tls_cert,
        key_file=where.tls_key,
        context=context,
        timings=RenewalTimings(backoff_initial_s=0.05, backoff_max_s=0.1),
        clock=lambda: now,  # at the renewal's due time of the bootstrap's certificate
    )


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """How long the renewer's loop waited each time: its module sees a spy for anyio.sleep
    (the rest of anyio as it is), so a test knows where the loop is without guessing."""
    seen: list[float] = []
    real_sleep = anyio.sleep

    async def sleep(delay: float) -> None:
        seen.append(delay)
        await real_sleep(delay)

    spied = SimpleNamespace(**{**vars(anyio), "sleep": sleep})
    monkeypatch.setattr(renewal, "anyio", spied)
    return seen


async def test_new_connections_get_the_renewed_certificate(
    tmp_path: Path, artifacts: BuiltArtifacts, waits: list[float]
) -> None:
    async with bootstrapped(tmp_path, artifacts) as (cp, where, store):
        ca_pem = (await cp.http.get("/api/node-ca.pem")).text
        context = server_context(where.tls_cert, where.tls_key)
        first_serial = file_serial(where.tls_cert)
        due = renew_at(*validity(x509.load_pem_x509_certificate(where.tls_cert.read_bytes())))
        async with (
            ControlPlaneClient(cp.url, "node-1", store) as client,
            tls_listener(context) as port,
        ):
            before = await connect(port, ca_pem)
            assert served_serial(before) == first_serial
            worker = renewer(client, where, context, due + 1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                # Its first wait is none (it is due), its second follows the renewal.
                with anyio.fail_after(30):
                    while len(waits) < 2:
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
            renewed = file_serial(where.tls_cert)
            assert renewed != first_serial
            # Renewed once, and not again: the loop waits for the new certificate's due time,
            # and at least min_interval_s (with the clock held at the old due time, the new
            # certificate, signed within the same second, is due as early: the floor holds).
            assert worker.renewals == 1
            new = x509.load_pem_x509_certificate(where.tls_cert.read_bytes())
            now, floor = due + 1, RenewalTimings().min_interval_s
            assert waits[0] == 0
            assert waits[1] == pytest.approx(max(renew_at(*validity(new)), now + floor) - now)
            assert waits[1] >= floor
            after = await connect(port, ca_pem)
            assert served_serial(after) == renewed
            # The connection made before goes on with the certificate it was given.
            await before.send(b"still here\n")
            assert await before.receive() == b"still here\n"
            assert served_serial(before) == first_serial
            for stream in (before, after):
                await stream.aclose()
        row = await cp.provisioning("node-1")
        assert row["cert_serial"] == format(renewed, "x")


async def test_a_refused_renewal_keeps_the_certificate_and_says_why(
    tmp_path: Path,
    artifacts: BuiltArtifacts,
    caplog: pytest.LogCaptureFixture,
    waits: list[float],
) -> None:
    async with bootstrapped(tmp_path, artifacts) as (cp, where, _store):
        context = server_context(where.tls_cert, where.tls_key)
        first_serial = file_serial(where.tls_cert)
        due = renew_at(*validity(x509.load_pem_x509_certificate(where.tls_cert.read_bytes())))
        # Another node's callback token: the control plane refuses (403).
        other = CallbackTokenStore(
            tmp_path / "other-token", cp.plane.tokens.mint_callback_token("x")
        )
        no_retry = RetryPolicy(attempts=1)
        async with ControlPlaneClient(cp.url, "node-1", other, retry=no_retry) as client:
            worker = renewer(client, where, context, due + 1)
            with pytest.raises(RenewalFailed, match=r"did not sign .*token is for another node"):
                await worker.renew_once()
            with caplog.at_level(logging.WARNING, logger="vm_agent.control_link"):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.run)
                    # due at once, then a refusal, then the backoff's wait
                    with anyio.fail_after(30):
                        while len(waits) < 2:
                            await anyio.sleep(0.02)
                    tg.cancel_scope.cancel()
        assert file_serial(where.tls_cert) == first_serial
        assert worker.renewals == 0
        # the first backoff: backoff_initial_s with equal jitter, never a hot loop
        assert waits[0] == 0 and 0.025 <= waits[1] <= 0.05, waits
        assert "TLS certificate not renewed: the control plane did not sign" in caplog.text
        assert "trying again in" in caplog.text
