"""TLS on the viewer port: real clients that verify the certificate, against a throwaway CA."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from tests.server.harness import daemon
from tests.tlsca import TlsFiles, make_tls_files
from vm_agent.edge.tls import TlsConfigError, server_context

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_verifying_client_gets_wss_and_a_modern_session(tmp_path: Path) -> None:
    async with daemon(tmp_path, tls=True) as d:
        assert d.url.startswith("wss://") and d.tls is not None
        async with d.viewer() as v:
            assert await v.call("session/list") == {"sessions": []}
            # Counted as authenticated through TLS too (the gate finds its socket).
            assert (d.server.admission.total, d.server.admission.unauthenticated) == (1, 0)
            tls = v.ws.transport.get_extra_info("ssl_object")
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.compression() is None
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
        # A client held to TLS 1.2 gets a forward-secret AEAD cipher.
        ctx = d.tls.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        async with d.viewer(ssl=ctx) as v:
            tls = v.ws.transport.get_extra_info("ssl_object")
            assert tls.version() == "TLSv1.2"
            assert tls.cipher()[0].startswith("ECDHE-") and (
                "GCM" in tls.cipher()[0] or "CHACHA" in tls.cipher()[0]
            )
        # https on the same port.
        async with httpx.AsyncClient(base_url=d.http_url, verify=d.tls.client_context()) as http:
            assert (await http.get("/health")).json() == {"status": "ok"}


async def test_clients_that_do_not_trust_the_certificate_are_stopped(tmp_path: Path) -> None:
    async with daemon(tmp_path, tls=True) as d:
        other = make_tls_files(tmp_path / "other-ca", ca_name="another CA")
        header = {"Authorization": f"Bearer {d.token()}"}
        for ctx in (ssl.create_default_context(), other.client_context()):
            with pytest.raises(ssl.SSLCertVerificationError):
                async with connect(d.url, ssl=ctx, additional_headers=header):
                    pass
        # The right CA, the wrong name: refused too (the name is checked, not only the CA).
        assert d.tls is not None
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(d.url, ssl=d.tls.client_context(), server_hostname="node.example"):
                pass
        assert d.server.viewer_count == 0
        # Every failed handshake gave its slot back.
        with anyio.fail_after(30):
            while d.server.admission.total:
                await anyio.sleep(0.02)


# What a client offering only TLS 1.0 and 1.1 is told by a server whose minimum is 1.2.
PROTOCOL_VERSION_ALERT = "TLSV1_ALERT_PROTOCOL_VERSION"


def old_protocol_client(files: TlsFiles) -> ssl.SSLContext:
    """Trusts the server's CA and offers only TLS 1.0 and 1.1, with any cipher at all."""
    old = files.client_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    return old


def client_refusal(port: int, client: ssl.SSLContext) -> str:
    """A handshake with 127.0.0.1:port: "ok" or the reason the client was refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            client.wrap_socket(raw, server_hostname="localhost").close()
        except ssl.SSLError as exc:
            return str(exc.reason)
    return "ok"


def refusal(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """A real handshake on loopback with `server`: what `client_refusal` says."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(ssl.SSLError, OSError), conn:
            server.wrap_socket(conn, server_side=True).recv(1)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        return client_refusal(listener.getsockname()[1], client)
    finally:
        thread.join(timeout=10)
        listener.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_the_version_check_tells_a_lowered_minimum_from_the_cipher_list(tmp_path: Path) -> None:
    """The assertion above can fail: with the minimum lowered to TLS 1.0 the same client
    is refused for the ciphers instead (a handshake failure), and with the ciphers opened
    too it gets in."""
    files = make_tls_files(tmp_path)
    ctx = server_context(files.cert_file, files.key_file)
    assert refusal(ctx, old_protocol_client(files)) == PROTOCOL_VERSION_ALERT
    lowered = server_context(files.cert_file, files.key_file)
    lowered.minimum_version = ssl.TLSVersion.TLSv1
    assert refusal(lowered, old_protocol_client(files)) == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    lowered.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert refusal(lowered, old_protocol_client(files)) == "ok"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_old_protocols_and_plain_ws_are_refused(tmp_path: Path) -> None:
    async with daemon(tmp_path, tls=True) as d:
        assert d.tls is not None
        old = old_protocol_client(d.tls)
        reason = await anyio.to_thread.run_sync(client_refusal, d.port, old)
        assert reason != "ok"
        # Refused for its version, not for its ciphers: the cipher list alone would also
        # refuse this client (as a handshake failure), which must not hide a lowered
        # minimum. The port closes without the alert (asyncio drops what OpenSSL had to
        # say), so the daemon's own listening context says why, served on loopback.
        context = d.server.ssl_context
        assert context is not None
        reason = await anyio.to_thread.run_sync(refusal, context, old_protocol_client(d.tls))
        assert reason == PROTOCOL_VERSION_ALERT
        # Plain HTTP to the TLS port gets no websocket.
        with pytest.raises((InvalidMessage, ConnectionError, EOFError)):
            async with connect(f"ws://127.0.0.1:{d.port}/v1/ws", open_timeout=10):
                pass
        async with d.viewer() as v:  # still serving
            assert await v.call("session/list") == {"sessions": []}
        # Every failed handshake gave its slot back.
        with anyio.fail_after(30):
            while d.server.admission.total:
                await anyio.sleep(0.02)


async def test_a_bad_token_over_tls_is_401_before_any_websocket(tmp_path: Path) -> None:
    async with daemon(tmp_path, tls=True) as d:
        assert d.tls is not None
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                d.url,
                ssl=d.tls.client_context(),
                additional_headers={"Authorization": "Bearer not.a.jwt"},
            ):
                pass
        assert refused.value.response.status_code == 401
        assert d.server.viewer_count == 0


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    for mode in (0o640, 0o604, 0o644):
        os.chmod(files.key_file, mode)
        with pytest.raises(TlsConfigError) as err:
            server_context(files.cert_file, files.key_file)
        assert str(err.value).startswith("VM_AGENT_TLS_KEY_FILE: ")
        assert f"{mode:04o}" in str(err.value)
    os.chmod(files.key_file, 0o600)
    assert isinstance(server_context(files.cert_file, files.key_file), ssl.SSLContext)


def test_unusable_tls_files_name_their_variable(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    link = tmp_path / "link.key"
    link.symlink_to(files.key_file)
    other = make_tls_files(tmp_path / "other")
    cases = [
        (files.cert_file, tmp_path / "missing.key", "VM_AGENT_TLS_KEY_FILE: ", "does not exist"),
        (files.cert_file, link, "VM_AGENT_TLS_KEY_FILE: ", "cannot open"),
        (tmp_path / "missing.pem", files.key_file, "VM_AGENT_TLS_CERT_FILE: ", "does not exist"),
        (files.cert_file, other.key_file, "VM_AGENT_TLS_CERT_FILE / ", "cannot load"),
    ]
    for cert, key, prefix, words in cases:
        with pytest.raises(TlsConfigError) as err:
            server_context(cert, key)
        assert str(err.value).startswith(prefix), err.value
        assert words in str(err.value)
