"""Reporting to the control plane with only a narrow callback token (docs/callback-api.md).

- `token`: `CallbackTokenStore` (the token file, 0600 only; atomic replacement on refresh);
- `client`: `ControlPlaneClient` (httpx + tenacity retries; 401/403 as exceptions);
- `outbox`: `OutboxSender` (the event log past a delivery cursor, acknowledged batches);
- `usage`: `node_usage()` for heartbeats;
- `activity`: what runs on the node (turns, pending permissions, terminals, processes in
  the sessions' cgroups) for heartbeats, and whether a draining daemon is drained;
- `link`: `ControlLink` (ready, heartbeats, token refresh, agent credentials, status, the
  drain the control plane asks for in a heartbeat's answer).

May import the session and what is below it; never server or daemon.
"""

from vm_agent.control_link.client import (
    CallbackError,
    CallbackForbidden,
    CallbackProtocolError,
    CallbackRejected,
    CallbackUnauthorized,
    CallbackUnavailable,
    ControlPlaneClient,
    HeartbeatAnswer,
    RetryPolicy,
)
from vm_agent.control_link.health import LinkHealth, LinkMetrics, LinkState
from vm_agent.control_link.link import ControlLink, LinkTimings
from vm_agent.control_link.outbox import CHAT_UPDATES, DEFAULT_TYPES, OutboxSender, is_forwarded
from vm_agent.control_link.token import CallbackTokenStore, InsecureTokenFile, TokenFileError
from vm_agent.control_link.usage import node_usage

__all__ = [
    "CHAT_UPDATES",
    "DEFAULT_TYPES",
    "CallbackError",
    "CallbackForbidden",
    "CallbackProtocolError",
    "CallbackRejected",
    "CallbackTokenStore",
    "CallbackUnauthorized",
    "CallbackUnavailable",
    "ControlLink",
    "ControlPlaneClient",
    "HeartbeatAnswer",
    "InsecureTokenFile",
    "LinkHealth",
    "LinkMetrics",
    "LinkState",
    "LinkTimings",
    "OutboxSender",
    "RetryPolicy",
    "TokenFileError",
    "is_forwarded",
    "node_usage",
]
