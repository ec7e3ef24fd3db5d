"""Renewing the node's TLS certificate through the control plane before it expires.

The control plane signs a node's certificate at the bootstrap for its `NODE_CERT_TTL_S`
(90 days). With `VM_AGENT_TLS_RENEW` the daemon asks for a new one at two-thirds of the
current one's life (`POST /api/nodes/{id}/certificate`: a request signed by the same key,
with the callback token), writes it over the certificate file and loads it into the
listener's TLS context: handshakes from then on get the new certificate, connections already
open keep theirs. A failure is logged and tried again with backoff; the old certificate
serves meanwhile, and the next start loads whichever is in the file.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from cryptography import x509

from vm_agent.control_link.bootstrap import (
    BootstrapRefused,
    certificate_for_key,
    certificate_request,
    load_or_make_key,
)
from vm_agent.control_link.client import CallbackError, ControlPlaneClient
from vm_agent.control_link.outbox import backoff_delay
from vm_agent.control_link.token import write_file_atomically
from vm_agent.edge.tls import TlsConfigError, load_certificate

log = logging.getLogger("vm_agent.control_link")

RENEW_AT_FRACTION = 2 / 3


def renew_at(not_before: float, not_after: float) -> float:
    """When a certificate valid from `not_before` to `not_after` is renewed (pure)."""
    return not_before + max(0.0, not_after - not_before) * RENEW_AT_FRACTION


def validity(cert: x509.Certificate) -> tuple[float, float]:
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


class RenewalFailed(Exception):
    """This attempt did not renew the certificate; one line for the log (no secrets)."""


@dataclass(frozen=True, slots=True)
class RenewalTimings:
    backoff_initial_s: float = 10.0
    backoff_max_s: float = 600.0
    # Between two renewals at least this long, whatever the certificates say: a control
    # plane with a lifetime shorter than its backdating would otherwise be asked in a loop.
    min_interval_s: float = 60.0


class CertificateRenewer:
    def __init__(
        self,
        client: ControlPlaneClient,
        *,
        node_id: str,
        cert_file: Path,
        key_file: Path,
        context: ssl.SSLContext,
        timings: RenewalTimings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = context
        self.timings = timings or RenewalTimings()
        self.clock = clock
        self.renewals = 0
        self.not_after: float | None = None  # of the certificate being served

    def expires_in_s(self) -> float | None:
        return None if self.not_after is None else self.not_after - self.clock()

    async def run(self) -> None:
        """Until cancelled: sleeps until the served certificate is due, then renews it."""
        failures = 0
        earliest = 0.0
        while True:
            try:
                due = max(await anyio.to_thread.run_sync(self._due), earliest)
                await anyio.sleep(max(0.0, due - self.clock()))
                await self.renew_once()
                earliest = self.clock() + self.timings.min_interval_s
            except RenewalFailed as exc:
                failures += 1
                delay = backoff_delay(
                    failures, self.timings.backoff_initial_s, self.timings.backoff_max_s
                )
                left = self.expires_in_s()
                log.warning(
                    "TLS certificate not renewed: %s; trying again in %.0fs%s",
                    exc,
                    delay,
                    "" if left is None else f" (the one served expires in {left:.0f}s)",
                )
                await anyio.sleep(delay)
            else:
                failures = 0

    async def renew_once(self) -> None:
        """One renewal: a new certificate for the same key, in the file and the context."""
        try:
            key = await anyio.to_thread.run_sync(load_or_make_key, self.key_file)
        except (BootstrapRefused, OSError, ValueError) as exc:
            raise RenewalFailed(f"the TLS key cannot be used ({exc})") from None
        try:
            pem = await self.client.renew_certificate(certificate_request(key, self.node_id))
        except CallbackError as exc:
            raise RenewalFailed(f"the control plane did not sign ({exc})") from None
        try:
            cert = certificate_for_key(pem, key)
        except ValueError as exc:
            raise RenewalFailed(f"the control plane's certificate {exc}") from None
        not_after = validity(cert)[1]
        if not_after <= self.clock():
            raise RenewalFailed("the control plane's certificate has already expired")
        try:
            await anyio.to_thread.run_sync(
                write_file_atomically, self.cert_file, pem.encode("ascii"), 0o644
            )
            # On the event loop's thread, which is the one doing handshakes with it.
            load_certificate(self.context, self.cert_file, self.key_file)
        except (OSError, TlsConfigError) as exc:
            raise RenewalFailed(f"the new certificate cannot be used ({exc})") from None
        self.not_after = not_after
        self.renewals += 1
        until = dt.datetime.fromtimestamp(not_after, dt.UTC).isoformat(timespec="seconds")
        log.info("TLS certificate renewed (serial %x), valid until %s", cert.serial_number, until)

    def _due(self) -> float:
        try:
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise RenewalFailed(f"cannot read {self.cert_file} ({exc})") from None
        not_before, self.not_after = validity(cert)
        return renew_at(not_before, self.not_after)
