"""Keys, requests and a TLS handshake over loopback, for the node-certificate tests."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def csr_pem(key: PrivateKey | None = None, names: tuple[str, ...] = ("evil.example.com",)) -> str:
    """A request asking for `names` (which the control plane must ignore)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def handshake(cert_pem: str, key: PrivateKey, ca_pem: str, server_hostname: str, tmp: Path) -> str:
    """A real TLS server on 127.0.0.1 with the node's certificate, and a client that verifies
    it against the CA with `server_hostname`; returns "ok" or the client's error."""
    try:
        served_certificate(cert_pem, key, ca_pem, server_hostname, tmp)
    except ssl.SSLError as exc:
        return str(exc)
    return "ok"


def served_certificate(
    cert_pem: str, key: PrivateKey, ca_pem: str, server_hostname: str, tmp: Path
) -> bytes:
    """As `handshake`, and the certificate the verifying client got (DER, as the control
    plane's connection reads it); raises the client's `ssl.SSLError`."""
    cert_file, key_file = tmp / "node.pem", tmp / "node.key"
    cert_file.write_text(cert_pem)
    key_file.write_bytes(key_pem(key))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cadata=ca_pem)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
        assert der is not None
        return der
    finally:
        thread.join(timeout=10)
        listener.close()
