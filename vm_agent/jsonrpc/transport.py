"""Transports carry whole messages; the connection never sees how they are framed.

``LineTransport`` frames messages as lines over a pair of byte streams (an agent's stdio).
The viewers' websocket gets its own transport with the same face, one message a frame.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream

from vm_agent.jsonrpc.framing import DEFAULT_MAX_LINE_BYTES, Frame, LineSplitter, Oversize

__all__ = ["LineTransport", "Oversize", "Transport", "TransportClosed"]

_READ_CHUNK = 256 * 1024


class TransportClosed(Exception):
    """The peer's side is gone: end of stream, broken pipe or reset."""


class Transport(Protocol):
    async def receive(self) -> bytes | str | Oversize:
        """The next whole message; raises ``TransportClosed`` once the peer is gone."""
        ...

    async def send(self, message: bytes) -> None:
        """Sends one message; raises ``TransportClosed`` if the peer is gone."""
        ...

    async def aclose(self) -> None: ...


class LineTransport:
    """Newline-delimited JSON over byte streams, each line bounded by ``max_line_bytes``."""

    def __init__(
        self,
        send_stream: ByteSendStream,
        receive_stream: ByteReceiveStream,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self._send_stream = send_stream
        self._receive_stream = receive_stream
        self._splitter = LineSplitter(max_line_bytes)
        self._ready: list[Frame] = []
        self._ready_pos = 0
        self._eof = False
        self._send_lock = anyio.Lock()

    async def receive(self) -> bytes | Oversize:
        while self._ready_pos >= len(self._ready):
            if self._eof:
                raise TransportClosed("end of stream")
            try:
                chunk = await self._receive_stream.receive(_READ_CHUNK)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._eof = True
                self._ready = self._splitter.end()
            except OSError as exc:
                self._eof = True
                self._ready = self._splitter.end()
                if not self._ready:
                    raise TransportClosed(str(exc)) from exc
            else:
                self._ready = self._splitter.feed(chunk)
            self._ready_pos = 0
        frame = self._ready[self._ready_pos]
        self._ready_pos += 1
        return frame

    async def send(self, message: bytes) -> None:
        # One lock so that concurrent senders never interleave parts of two lines.
        async with self._send_lock:
            try:
                await self._send_stream.send(message + b"\n")
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
                raise TransportClosed(f"cannot write to peer: {exc!r}") from exc

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(OSError, anyio.BrokenResourceError):
                await self._send_stream.aclose()
