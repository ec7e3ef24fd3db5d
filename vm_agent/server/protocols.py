"""What the viewer server needs from its neighbours, as structural types.

``vm_agent.edge.auth.JwksVerifier`` and ``vm_agent.runtime.metrics.Metrics`` satisfy
these; tests may pass anything else with the same face.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prometheus_client import Counter, Gauge


class Identity(Protocol):
    """Who a token speaks for (``vm_agent.edge.auth.ViewerIdentity``)."""

    @property
    def subject(self) -> str: ...

    @property
    def can_read(self) -> bool: ...

    @property
    def can_write(self) -> bool: ...

    @property
    def is_node(self) -> bool:
        """The ``node`` scope: the control plane's own connection (every session)."""
        ...

    @property
    def expires_at(self) -> float:
        """The token's ``exp`` (Unix seconds)."""
        ...


class TokenVerifier(Protocol):
    @property
    def leeway_s(self) -> float:
        """How long past ``exp`` a token is still accepted (a connection stays open)."""
        ...

    async def verify(self, token: str) -> Identity:
        """The token's identity; raises (``vm_agent.edge.auth.Unauthorized``) when it is refused."""
        ...


class ServerMetrics(Protocol):
    """The metrics the viewer server moves (``vm_agent.runtime.metrics.Metrics``)."""

    @property
    def viewers_connected(self) -> Gauge: ...

    @property
    def viewer_overflows_total(self) -> Counter: ...

    @property
    def jsonrpc_messages_total(self) -> Counter: ...

    @property
    def ws_auth_failures_total(self) -> Counter: ...

    @property
    def accept_errors_total(self) -> Counter: ...

    @property
    def connections_evicted_total(self) -> Counter: ...

    @property
    def viewer_tokens_expired_total(self) -> Counter: ...

    def connection_refused(self, reason: str) -> None: ...

    def set_connection_source(self, fn: Callable[[], tuple[int, int]]) -> None: ...

    def render(self) -> tuple[bytes, str]: ...
