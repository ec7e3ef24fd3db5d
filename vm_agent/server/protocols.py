"""What the viewer server needs from its neighbours, as structural types.

``vm_agent.auth.JwksVerifier`` and ``vm_agent.metrics.Metrics`` satisfy these; tests may
pass anything else with the same face.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import Counter, Gauge


class Identity(Protocol):
    """Who a token speaks for (``vm_agent.auth.ViewerIdentity``)."""

    @property
    def subject(self) -> str: ...

    @property
    def can_read(self) -> bool: ...

    @property
    def can_write(self) -> bool: ...


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Identity:
        """The token's identity; raises (``vm_agent.auth.Unauthorized``) when it is refused."""
        ...


class ServerMetrics(Protocol):
    """The metrics the viewer server moves (``vm_agent.metrics.Metrics``)."""

    @property
    def viewers_connected(self) -> Gauge: ...

    @property
    def viewer_overflows_total(self) -> Counter: ...

    @property
    def jsonrpc_messages_total(self) -> Counter: ...

    @property
    def ws_auth_failures_total(self) -> Counter: ...

    def render(self) -> tuple[bytes, str]: ...
