"""The listener's TLS context, from the certificate and key files that settings name.

A modern server context: TLS 1.2 or later, forward-secret AEAD ciphers for TLS 1.2 (TLS
1.3 has only such suites), no compression, no renegotiation, ALPN ``http/1.1`` (websockets
speak HTTP/1.1). The key file is refused, like the callback token file, when group or
others have any access to it; it is loaded through the descriptor that was checked.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from vm_agent.common.private_files import FileUnusable, open_private

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class TlsConfigError(Exception):
    """The TLS files cannot be used; one line for a person that names the variable."""


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """Raises ``TlsConfigError`` naming ``VM_AGENT_TLS_KEY_FILE`` or ``..._CERT_FILE``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
    )
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    load_certificate(ctx, cert_file, key_file)
    return ctx


def load_certificate(ctx: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    """Loads (or, for a renewal, replaces) the context's certificate and key; handshakes
    from then on use them. Raises ``TlsConfigError``."""
    try:
        key_fd = open_private(key_file, "TLS key file")
    except FileUnusable as exc:
        raise TlsConfigError(f"VM_AGENT_TLS_KEY_FILE: {exc}") from None
    try:
        if not cert_file.is_file():
            raise TlsConfigError(
                f"VM_AGENT_TLS_CERT_FILE: certificate file {cert_file} does not exist"
            )
        try:
            # Through the descriptor checked above: no window to swap the file.
            ctx.load_cert_chain(cert_file, f"/proc/self/fd/{key_fd}")
        except ssl.SSLError as exc:
            raise TlsConfigError(
                f"VM_AGENT_TLS_CERT_FILE / VM_AGENT_TLS_KEY_FILE: cannot load the certificate "
                f"{cert_file} with the key {key_file}: {exc.reason or exc}"
            ) from None
        except OSError as exc:
            raise TlsConfigError(
                f"VM_AGENT_TLS_CERT_FILE: cannot read {cert_file}: {exc.strerror or exc}"
            ) from None
    finally:
        os.close(key_fd)
