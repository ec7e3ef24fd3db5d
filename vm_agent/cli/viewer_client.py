"""A viewer's websocket client pieces, shared by the commands that talk to a daemon.

One JSON-RPC message a text frame over ``websockets``, carried by the daemon's own
``Connection`` (vm_agent/jsonrpc/); TLS that checks the daemon's certificate.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from vm_agent.jsonrpc.ws_client import WebSocketClientTransport as ClientTransport

__all__ = [
    "CLOSE_UNAUTHORIZED",
    "MAX_FRAME",
    "TOKEN_ENV",
    "ClientTransport",
    "Unauthorized",
    "tls_context",
]

TOKEN_ENV = "VM_AGENT_TOKEN"  # noqa: S105 - the variable's name, not a secret
CLOSE_UNAUTHORIZED = 4001
MAX_FRAME = 64 * 1024 * 1024


class Unauthorized(Exception):
    pass


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name checked, against ``ca_file`` or the system's CAs."""
    ctx = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
