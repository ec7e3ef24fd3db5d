"""A viewer's websocket client pieces, shared by the commands that talk to a daemon.

One JSON-RPC message a text frame over ``websockets``, carried by the daemon's own
``Connection`` (vm_agent/jsonrpc/); TLS that checks the daemon's certificate.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from vm_agent.jsonrpc.transport import TransportClosed

TOKEN_ENV = "VM_AGENT_TOKEN"  # noqa: S105 - the variable's name, not a secret
CLOSE_UNAUTHORIZED = 4001
MAX_FRAME = 64 * 1024 * 1024


class Unauthorized(Exception):
    pass


class ClientTransport:
    """One JSON-RPC message a text frame; remembers the close code the daemon gave."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.close_code: int | None = None
        self.close_reason = ""

    def _closed(self, exc: ConnectionClosed) -> TransportClosed:
        if exc.rcvd is not None:
            self.close_code, self.close_reason = exc.rcvd.code, exc.rcvd.reason
        return TransportClosed(str(exc))

    async def receive(self) -> bytes | str:
        try:
            return await self.ws.recv()
        except ConnectionClosed as exc:
            raise self._closed(exc) from exc

    async def send(self, message: bytes) -> None:
        try:
            await self.ws.send(message.decode())
        except ConnectionClosed as exc:
            raise self._closed(exc) from exc

    async def aclose(self) -> None:
        await self.ws.close()


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name checked, against ``ca_file`` or the system's CAs."""
    ctx = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
