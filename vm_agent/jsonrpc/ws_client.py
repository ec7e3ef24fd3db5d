"""A websocket client as a JSON-RPC transport: one message a text frame (what the viewer
API speaks), for everything that talks to a daemon as a viewer: `vm-agent attach`, the ACP
gateway, the control plane's connection to its nodes."""

from __future__ import annotations

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from vm_agent.jsonrpc.transport import TransportClosed


class WebSocketClientTransport:
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
