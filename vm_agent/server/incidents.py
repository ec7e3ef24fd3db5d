"""What goes wrong at the viewer port's door, counted in metrics and logged at a bounded
rate: a flood of strangers must not become a flood of log lines."""

from __future__ import annotations

import logging
import time

from vm_agent.edge.ratelimit import LogBudget, left_out_note
from vm_agent.server.admission import Refusal
from vm_agent.server.protocols import ServerMetrics

log = logging.getLogger("vm_agent.server.server")

_REFUSAL_TEXT = {
    Refusal.RATE: "the cap on new connections per second per address",
    Refusal.TOTAL: "the cap on connections",
    Refusal.ADDRESS: "the cap on connections per address",
    Refusal.ADDRESS_UNAUTHENTICATED: "the cap on unauthenticated connections per address",
}


class Incidents:
    def __init__(self, metrics: ServerMetrics | None) -> None:
        self.metrics = metrics
        self._refusals = LogBudget(lines=5, window_s=10.0)
        self._accept_errors = LogBudget(lines=1, window_s=10.0)
        self._auth_failures = LogBudget(lines=10, window_s=10.0)

    def auth_failed(self, who: str, why: str) -> None:
        if self.metrics is not None:
            self.metrics.ws_auth_failures_total.inc()
        left_out = self._auth_failures.take(time.monotonic())
        if left_out is not None:
            log.warning("%s: unauthorized: %s%s", who, why, left_out_note(left_out))

    def token_expired(self) -> None:
        if self.metrics is not None:
            self.metrics.viewer_tokens_expired_total.inc()

    def refused(self, refusal: Refusal, host: str) -> None:
        if self.metrics is not None:
            self.metrics.connection_refused(refusal.value)
        left_out = self._refusals.take(time.monotonic())
        if left_out is not None:
            log.warning(
                "refused a connection from %s: %s is reached%s",
                host,
                _REFUSAL_TEXT[refusal],
                left_out_note(left_out),
            )

    def evicted(self, key: str) -> None:
        if self.metrics is not None:
            self.metrics.connections_evicted_total.inc()
        left_out = self._refusals.take(time.monotonic())
        if left_out is not None:
            log.warning(
                "the unauthenticated pool is full: closed the oldest stranger's connection "
                "(from %s) to let a newcomer in%s",
                key,
                left_out_note(left_out),
            )

    def accept_error(self, exc: OSError, shed: bool) -> None:
        if self.metrics is not None:
            self.metrics.accept_errors_total.inc()
        left_out = self._accept_errors.take(time.monotonic())
        if left_out is not None:
            log.error(
                "accepting a connection failed: %s; %s%s",
                exc.strerror or exc,
                "closed a waiting connection to make room" if shed else "pausing accepts",
                left_out_note(left_out),
            )
