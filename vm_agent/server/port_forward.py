"""``port/*``: a viewer reaches a port its session listens on, through the daemon's port.

``port/open`` connects to the port on the node's loopback only when the session's own
processes listen on it now (``ports.scan``: by its cgroup), so never another session's
port nor the daemon's; the stream's bytes then go both ways as base64 in ``port/send``
requests and ``port/data`` notifications (raw TCP: HTTP and websockets alike), until
``port/close`` or either side ends (``port/closed``). A stream belongs to the viewer that
opened it and ends with its connection. Reading from the port waits for room in the
viewer's queue, so a fast server is paced by its viewer, never dropped or overflowing it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketStream
from pydantic import BaseModel, ConfigDict, Field

from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.jsonrpc.messages import encode_notification
from vm_agent.jsonrpc.transport import TransportClosed
from vm_agent.ports.scan import ports_of
from vm_agent.server import errors
from vm_agent.server.workspace_methods import parse_params
from vm_agent.session.session import AgentSession

if TYPE_CHECKING:
    from vm_agent.server.methods import ViewerContext

Handler = Callable[[Any], Awaitable[Any]]
Lookup = Callable[[str], AgentSession]

MAX_STREAMS = 16  # a viewer's open streams
CHUNK = 32 * 1024
MAX_SEND = 64 * 1024  # decoded bytes of one port/send
CONNECT_TIMEOUT_S = 5.0


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenParams(_Params):
    session_id: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class StreamParams(_Params):
    stream_id: str = Field(min_length=1, max_length=64)


class SendParams(StreamParams):
    data: str = Field(max_length=MAX_SEND * 4 // 3 + 4)


def target_host(address: str) -> str:
    """Where to connect for a socket listening on ``address``: loopback for a wildcard."""
    ip = ipaddress.ip_address(address)
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return address


class PortForwards:
    """The streams of one viewer."""

    def __init__(self, ctx: ViewerContext, lookup: Lookup) -> None:
        self.ctx = ctx
        self.lookup = lookup
        self.streams: dict[str, SocketStream] = {}

    def handlers(self) -> dict[str, Handler]:
        return {"port/open": self.open, "port/send": self.send, "port/close": self.close}

    async def open(self, raw: Any) -> dict[str, Any]:
        args = parse_params(OpenParams, "port/open", raw)
        session = self.lookup(args.session_id)
        if len(self.streams) >= MAX_STREAMS:
            raise errors.refused(f"this connection has {MAX_STREAMS} streams open; close one")
        listed, by = await anyio.to_thread.run_sync(ports_of, session.containment)
        found = [p for p in listed if p["port"] == args.port]
        if not found:
            why = "its processes cannot be told apart here" if by is None else "it listens on"
            raise errors.refused(f"port {args.port} is not one session {session.id!r} {why}")
        host = target_host(str(found[0]["address"]))
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                stream = await anyio.connect_tcp(host, args.port)
        except (OSError, TimeoutError) as exc:
            raise errors.refused(f"cannot connect to port {args.port}: {exc}") from None
        # Still the session's after the connect (a listener gone and another's in its
        # place in between would be refused here).
        again, _ = await anyio.to_thread.run_sync(ports_of, session.containment)
        if not any(p["port"] == args.port for p in again):
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise errors.refused(f"port {args.port} stopped being session {session.id!r}'s")
        stream_id = f"fwd-{secrets.token_hex(6)}"
        self.streams[stream_id] = stream
        # Starts on a later turn of the loop: the answer is queued before any data.
        self.ctx.viewer_tg.start_soon(self._pump, stream_id, stream)
        return {"stream_id": stream_id, "host": host, "port": args.port}

    async def send(self, raw: Any) -> dict[str, Any]:
        args = parse_params(SendParams, "port/send", raw)
        stream = self._stream(args.stream_id)
        try:
            data = base64.b64decode(args.data, validate=True)
        except (binascii.Error, ValueError):
            raise JsonRpcError.invalid_params("port/send: data is not base64") from None
        if len(data) > MAX_SEND:
            raise JsonRpcError.invalid_params(f"port/send: more than {MAX_SEND} bytes")
        try:
            await stream.send(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise errors.refused(f"the stream is closed: {exc}") from None
        return {}

    async def close(self, raw: Any) -> dict[str, Any]:
        args = parse_params(StreamParams, "port/close", raw)
        stream = self._stream(args.stream_id)
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        return {}

    def _stream(self, stream_id: str) -> SocketStream:
        stream = self.streams.get(stream_id)
        if stream is None:
            raise errors.refused(f"no open stream {stream_id!r} on this connection")
        return stream

    async def _pump(self, stream_id: str, stream: SocketStream) -> None:
        transport = self.ctx.transport
        try:
            async with stream:
                while True:
                    # Room for this chunk (and the answers behind it) before reading more.
                    await transport.wait_for_room(max(2, transport.queue_limit // 4))
                    data = await stream.receive(CHUNK)
                    params = {"stream_id": stream_id, "data": base64.b64encode(data).decode()}
                    transport.offer(encode_notification("port/data", params))
        except (
            anyio.EndOfStream,
            anyio.ClosedResourceError,
            anyio.BrokenResourceError,
            OSError,
        ):
            pass
        except TransportClosed:  # the viewer is closing: nothing to tell it
            return
        finally:
            self.streams.pop(stream_id, None)
        transport.offer(encode_notification("port/closed", {"stream_id": stream_id}))
