"""How the link to the control plane is doing: one state, logged once per change, with metrics.

The metrics object is duck-typed (`vm_agent.runtime.metrics.Metrics` has these members), so this
package does not depend on the metrics module.
"""

from __future__ import annotations

import logging
import time
from enum import StrEnum
from typing import Any, Literal, Protocol

log = logging.getLogger("vm_agent.control_link")

FailureReason = Literal["unauthorized", "forbidden", "server_error", "network", "other"]


class GaugeLike(Protocol):
    def set(self, value: float) -> None: ...


class CounterLike(Protocol):
    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Any: ...


class LinkMetrics(Protocol):
    """The members of `vm_agent.runtime.metrics.Metrics` this package uses."""

    @property
    def outbox_depth(self) -> GaugeLike: ...

    @property
    def callback_failures_total(self) -> CounterLike: ...

    @property
    def callback_token_valid(self) -> GaugeLike: ...


class LinkState(StrEnum):
    STARTING = "starting"  # nothing answered yet
    OK = "ok"
    UNAUTHORIZED = "unauthorized"  # 401: the token expired or was revoked
    FORBIDDEN = "forbidden"  # 403: a token for another node, or of the wrong kind
    UNREACHABLE = "unreachable"  # network errors, 5xx or 429 after the retries


_MESSAGES = {
    LinkState.OK: "control plane: calls succeed",
    LinkState.UNAUTHORIZED: (
        "control plane refuses the callback token (401: expired or revoked); sessions keep "
        "running, events wait in the outbox, retrying at the heartbeat interval"
    ),
    LinkState.FORBIDDEN: (
        "control plane forbids this node's calls (403: the callback token is for another "
        "node or of the wrong kind); sessions keep running, events wait in the outbox"
    ),
    LinkState.UNREACHABLE: (
        "control plane unreachable or failing; sessions keep running, events wait in the outbox"
    ),
}


class LinkHealth:
    """The last final outcome of a callback, shared by every caller of one client."""

    def __init__(self, metrics: LinkMetrics | None = None) -> None:
        self.metrics = metrics
        self.state = LinkState.STARTING
        self.detail: str | None = None
        self.changed_at = time.monotonic()
        self.last_success: float | None = None  # monotonic

    def attempt_failed(self, reason: FailureReason) -> None:
        if self.metrics is not None:
            self.metrics.callback_failures_total.labels(reason=reason).inc()

    def succeeded(self) -> None:
        self.last_success = time.monotonic()
        self._become(LinkState.OK, None)
        if self.metrics is not None:
            self.metrics.callback_token_valid.set(1)

    def failed(self, state: LinkState, detail: str) -> None:
        self._become(state, detail)
        if self.metrics is not None and state in (LinkState.UNAUTHORIZED, LinkState.FORBIDDEN):
            self.metrics.callback_token_valid.set(0)

    def _become(self, state: LinkState, detail: str | None) -> None:
        self.detail = detail
        if state is self.state:
            return
        previous, self.state = self.state, state
        self.changed_at = time.monotonic()
        if state is LinkState.OK:
            if previous is not LinkState.STARTING:
                log.warning("%s again (was %s)", _MESSAGES[state], previous.value)
            return
        log.error("%s: %s", _MESSAGES[state], detail)
