"""The node's first start: trade the bootstrap token for the callback token and a certificate.

``plan_start`` decides from which files exist (pure). On ``EXCHANGE`` the daemon makes its
TLS key (0600; one left by an interrupted start is reused), sends a certificate request
with the bootstrap token (``POST /api/nodes/{id}/bootstrap``, docs/callback-api.md), writes the
certificate and the callback token (0600, through the token writer) and deletes the spent
bootstrap token. Later starts find the callback token and never need the bootstrap token.

A control plane that cannot be reached (connection errors, 5xx, 429) is tried again with
backoff for as long as it takes; each wait extends systemd's start timeout
(``EXTEND_TIMEOUT_USEC``) and says what it waits for in ``STATUS=``, while the watchdog
keeps being pinged. A refusal (401/403/404: a wrong, expired or spent token; another 4xx)
is ``BootstrapRefused``: one line for a person, and the daemon exits with status 2, which
the unit does not restart.
"""

from __future__ import annotations

import enum
import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vm_agent.common.redact import Redactor
from vm_agent.control_link.client import error_text
from vm_agent.control_link.outbox import backoff_delay
from vm_agent.control_link.token import (
    CallbackTokenStore,
    read_secret_file,
    write_file_atomically,
    write_token_file,
)
from vm_agent.runtime.sdnotify import SdNotifier
from vm_agent.runtime.settings import Settings

log = logging.getLogger("vm_agent.control_link")

# Refusals that no retry can mend.
_REFUSED = frozenset({400, 401, 403, 404, 405, 409, 410, 413, 415, 422})


class StartPlan(enum.Enum):
    NO_CONTROL_PLANE = enum.auto()  # dev mode
    USE_CALLBACK_TOKEN = enum.auto()
    EXCHANGE = enum.auto()


def plan_start(*, control_plane: bool, callback_token: bool, bootstrap_token: bool) -> StartPlan:
    """Which start this is, from what exists. A callback token wins: the bootstrap token
    beside it is spent (an earlier start wrote the one and died before deleting the other)."""
    if not control_plane:
        return StartPlan.NO_CONTROL_PLANE
    if callback_token or not bootstrap_token:
        return StartPlan.USE_CALLBACK_TOKEN
    return StartPlan.EXCHANGE


class BootstrapRefused(Exception):
    """The control plane will not trade this token (or answered nonsense): for a person."""


@dataclass(frozen=True, slots=True)
class BootstrapFiles:
    bootstrap_token: Path
    callback_token: Path
    tls_cert: Path
    tls_key: Path


@dataclass(frozen=True, slots=True)
class BootstrapTimings:
    initial_s: float = 1.0
    max_s: float = 60.0
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class BootstrapAnswer:
    callback_token: str
    certificate: str
    dns_name: str | None


def load_or_make_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The node's TLS key: created 0600 (never wider, even for a moment), or reused."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077:
            raise BootstrapRefused(
                f"TLS key {path} must be a regular file only its owner can read"
            ) from None
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise BootstrapRefused(f"TLS key {path} is not an EC key") from None
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return key


def certificate_request(key: ec.EllipticCurvePrivateKey, node_id: str) -> str:
    """The names in it are a courtesy: the control plane decides the certificate's names."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def certificate_for_key(pem: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """The certificate in `pem`, if it is for `key`; ValueError saying what it is not."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ValueError("is not PEM") from None
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != theirs:
        raise ValueError("is not for this node's key")
    return cert


def parse_answer(raw: Any, key: ec.EllipticCurvePrivateKey) -> BootstrapAnswer:
    """The answer's callback token and a certificate for our own key, or BootstrapRefused."""
    if not isinstance(raw, dict):
        raise BootstrapRefused("bootstrap answer is not a JSON object")
    token, certificate = raw.get("callback_token"), raw.get("certificate")
    if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token):
        raise BootstrapRefused("bootstrap answer has no callback token")
    if not isinstance(certificate, str):
        raise BootstrapRefused("bootstrap answer has no certificate")
    try:
        certificate_for_key(certificate, key)
    except ValueError as exc:
        raise BootstrapRefused(f"bootstrap answer's certificate {exc}") from None
    dns_name = raw.get("dns_name")
    return BootstrapAnswer(
        token.strip(), certificate, dns_name if isinstance(dns_name, str) else None
    )


class Bootstrapper:
    def __init__(
        self,
        *,
        control_plane_url: str,
        node_id: str,
        files: BootstrapFiles,
        notifier: SdNotifier,
        redactor: Redactor,
        timings: BootstrapTimings | None = None,
        http: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = f"{control_plane_url.rstrip('/')}/api/nodes/{node_id}/bootstrap"
        self.verify = verify
        self.node_id = node_id
        self.files = files
        self.notifier = notifier
        self.redactor = redactor
        self.timings = timings or BootstrapTimings()
        self._http = http
        self.attempts = 0

    async def run(self) -> CallbackTokenStore:
        """Until the exchange succeeds (BootstrapRefused when it cannot); then the files."""
        token = await anyio.to_thread.run_sync(
            read_secret_file, self.files.bootstrap_token, "bootstrap token file"
        )
        self.redactor.add_secret(token)
        key = await anyio.to_thread.run_sync(load_or_make_key, self.files.tls_key)
        csr = certificate_request(key, self.node_id)
        t = self.timings
        http = self._http or httpx.AsyncClient(
            timeout=httpx.Timeout(t.request_timeout_s, connect=t.connect_timeout_s),
            follow_redirects=False,
            verify=self.verify,
        )
        try:
            raw = await self._exchange(http, token, csr)
        finally:
            if self._http is None:
                await http.aclose()
        answer = parse_answer(raw, key)
        self.redactor.add_secret(answer.callback_token)
        await anyio.to_thread.run_sync(self._keep, answer)
        log.info(
            "bootstrap: callback token and TLS certificate%s received",
            f" for {answer.dns_name}" if answer.dns_name else "",
        )
        return CallbackTokenStore(self.files.callback_token, answer.callback_token, self.redactor)

    async def _exchange(self, http: httpx.AsyncClient, token: str, csr: str) -> Any:
        t = self.timings
        while True:
            self.attempts += 1
            # Room for this request and the wait after it, before systemd's start timeout.
            self._extend(t.request_timeout_s + t.connect_timeout_s + t.max_s)
            try:
                response = await http.post(
                    self.url, json={"csr": csr}, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise BootstrapRefused("bootstrap answer is not JSON") from None
                detail = f"HTTP {response.status_code}: {error_text(response)}"
                if response.status_code in _REFUSED:
                    raise BootstrapRefused(
                        f"the control plane refused the bootstrap ({detail}); "
                        f"this node needs a new bootstrap token in {self.files.bootstrap_token}"
                    )
                reason = detail
            delay = backoff_delay(self.attempts, t.initial_s, t.max_s)
            log.warning(
                "bootstrap: control plane not reachable at %s (%s); attempt %d, next in %.0fs",
                self.url,
                reason,
                self.attempts,
                delay,
            )
            self.notifier.status(
                f"bootstrap: waiting for the control plane ({reason}); "
                f"attempt {self.attempts}, next in {delay:.0f}s"
            )
            await anyio.sleep(delay)

    def _extend(self, seconds: float) -> None:
        self.notifier.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def _keep(self, answer: BootstrapAnswer) -> None:
        """Certificate, then callback token, then the spent bootstrap token goes: a crash
        in between leaves a start that uses the callback token and deletes the rest."""
        write_file_atomically(self.files.tls_cert, answer.certificate.encode("ascii"), 0o644)
        write_token_file(self.files.callback_token, answer.callback_token)
        discard_spent_token(self.files.bootstrap_token)


def discard_spent_token(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def start_plan(settings: Settings) -> StartPlan:
    """Whether this start trades the bootstrap token first (BootstrapRefused if it cannot);
    deletes a spent bootstrap token left beside the callback token."""
    plan = plan_start(
        control_plane=settings.control_plane_url is not None,
        callback_token=settings.callback_token_file.exists(),
        bootstrap_token=settings.bootstrap_token_file.exists(),
    )
    spent = plan is StartPlan.USE_CALLBACK_TOKEN and settings.callback_token_file.exists()
    if spent and discard_spent_token(settings.bootstrap_token_file):
        log.info("deleted the spent bootstrap token %s", settings.bootstrap_token_file)
    if plan is StartPlan.EXCHANGE and (
        settings.tls_cert_file is None or settings.tls_key_file is None
    ):
        raise BootstrapRefused(
            "VM_AGENT_TLS_CERT_FILE and VM_AGENT_TLS_KEY_FILE are required for the bootstrap "
            "(the control plane signs the node's certificate)"
        )
    return plan


async def exchange_unless_stopped(
    settings: Settings,
    notifier: SdNotifier,
    redactor: Redactor,
    stop: anyio.Event,
    verify: ssl.SSLContext | bool = True,
) -> CallbackTokenStore | None:
    """The callback token from the bootstrap exchange; None if a stop was asked first."""
    assert settings.control_plane_url is not None
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    bootstrapper = Bootstrapper(
        control_plane_url=settings.control_plane_url,
        node_id=settings.node_id,
        files=BootstrapFiles(
            bootstrap_token=settings.bootstrap_token_file,
            callback_token=settings.callback_token_file,
            tls_cert=settings.tls_cert_file,
            tls_key=settings.tls_key_file,
        ),
        notifier=notifier,
        redactor=redactor,
        timings=BootstrapTimings(
            initial_s=settings.bootstrap_retry_initial_s, max_s=settings.bootstrap_retry_max_s
        ),
        verify=verify,
    )
    notifier.status("bootstrap: trading the bootstrap token with the control plane")
    tokens: CallbackTokenStore | None = None
    async with anyio.create_task_group() as tg:

        async def cancel_on_stop() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_on_stop)
        tokens = await bootstrapper.run()
        tg.cancel_scope.cancel()
    return tokens
