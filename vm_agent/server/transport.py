"""The viewers' websocket as a JSON-RPC ``Transport``: one message a text frame.

Everything we send to a viewer goes through ONE bounded queue drained by ONE writer task,
so a slow viewer costs us at most ``queue_limit`` messages and never slows anyone else:
``offer`` never waits, and a full queue closes that viewer (4008) instead of growing.
Incoming frames over the size limit are refused by the websockets library itself (close
1009, from ``max_size``); a binary frame closes 1003. Both reach the connection as the
peer going away (``TransportClosed``), never as an exception of the daemon.

A viewer that connects with ``?batch=1`` gets what is queued for it coalesced into JSON-RPC
2.0 batches (one text frame holding an array of messages, in order): a busy viewer then
costs one websocket frame per drain instead of one per event, on both sides. A message
that is alone in the queue still goes out as itself, so batching adds no latency.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import anyio
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from vm_agent.jsonrpc.transport import TransportClosed

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_UNAUTHORIZED = 4001
CLOSE_TOO_SLOW = 4008
CLOSE_EVENTS_DROPPED = 4010
TOO_SLOW_REASON = "viewer too slow: resume with after_seq"
# A batch frame holds at most this many bytes of messages (one larger message goes alone).
BATCH_MAX_BYTES = 256 * 1024

Counter = Callable[[int], None]


class WebSocketTransport:
    """A ``Transport`` over a server-side websocket, with a bounded outgoing queue."""

    def __init__(
        self,
        ws: ServerConnection,
        *,
        queue_limit: int,
        on_overflow: Callable[[], None] | None = None,
        count_in: Counter | None = None,
        count_out: Counter | None = None,
        close_timeout_s: float = 5.0,
        batch: bool = False,
    ) -> None:
        self.ws = ws
        self.queue_limit = queue_limit
        self.batch = batch
        self._queue: deque[bytes] = deque()
        self._wake = anyio.Event()
        self._room = anyio.Event()
        self._room_wanted = False
        self._close: tuple[int, str] | None = None
        self._on_overflow = on_overflow
        self._count_in = count_in
        self._count_out = count_out
        self._close_timeout_s = close_timeout_s
        self._send_scope: anyio.CancelScope | None = None
        self.closed = anyio.Event()
        self.close_code: int | None = None

    # -- outgoing ---------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def closing(self) -> bool:
        return self._close is not None or self.closed.is_set()

    def offer(self, frame: bytes) -> bool:
        """Queues one message without waiting; a full queue closes the viewer (4008)."""
        if self.closing:
            return False
        if len(self._queue) >= self.queue_limit:
            self.request_close(CLOSE_TOO_SLOW, TOO_SLOW_REASON)
            if self._on_overflow is not None:
                self._on_overflow()
            return False
        self._queue.append(frame)
        self._wake.set()
        return True

    async def wait_for_room(self, free: int) -> None:
        """Waits until at least ``free`` messages fit (replay pulls at the viewer's pace)."""
        while not self.closing and self.queue_limit - len(self._queue) < free:
            self._room_wanted = True
            await self._room.wait()
            self._room = anyio.Event()
            self._room_wanted = False
        if self.closing:
            raise TransportClosed("viewer closing")

    async def send(self, message: bytes) -> None:
        if self.closing:
            raise TransportClosed("viewer closing")
        if not self.offer(message):
            raise TransportClosed("viewer too slow")

    def request_close(self, code: int, reason: str) -> None:
        """Asks the writer to close the websocket (never waits; the first request wins)."""
        if self._close is None and not self.closed.is_set():
            self._close = (code, reason)
            self._queue.clear()
            self._wake.set()
            self._room.set()
            if self._send_scope is not None:
                # Stuck writing to a viewer that does not read: the frame is already in
                # the socket's buffer, so stop waiting for it to drain and close instead.
                self._send_scope.cancel()

    async def run_writer(self) -> None:
        """Drains the queue into the socket until the viewer is closed."""
        try:
            # One cancel scope for the whole drain: ``request_close`` cancels it when the
            # writer is stuck on a viewer that does not read (the frame being written is
            # already in the socket's buffer, so nothing is cut in half).
            with anyio.CancelScope() as self._send_scope:
                await self._drain()
            self._send_scope = None
            if self._close is not None:
                await self._close_socket(*self._close)
        finally:
            self._send_scope = None
            if self.close_code is None:
                self.close_code = self.ws.close_code
            self._queue.clear()
            self.closed.set()
            self._room.set()

    async def _drain(self) -> None:
        queue, ws, count = self._queue, self.ws, self._count_out
        while True:
            while not queue and self._close is None:
                await self._wake.wait()
                self._wake = anyio.Event()
            if self._close is not None:
                return
            if self.batch and len(queue) > 1:
                frame, sent = take_batch(queue, BATCH_MAX_BYTES)
            else:
                frame, sent = queue.popleft(), 1
            if self._room_wanted:
                self._room.set()
            try:
                await ws.send(frame, text=True)
            except ConnectionClosed:
                return
            if count is not None:
                count(sent)

    async def _close_socket(self, code: int, reason: str) -> None:
        self.close_code = code
        # Shielded so that a shutdown still tells the viewer why; bounded, because a viewer
        # that does not read never drains the close frame.
        with anyio.move_on_after(self._close_timeout_s, shield=True) as scope:
            await self.ws.close(code, reason)
        if scope.cancelled_caught:
            self.ws.transport.abort()

    # -- incoming ---------------------------------------------------------------------------

    async def receive(self) -> bytes | str:
        if self.closing:
            raise TransportClosed("viewer closing")
        try:
            frame = await self.ws.recv()
        except ConnectionClosed as exc:
            raise TransportClosed(_describe(exc)) from None
        if isinstance(frame, bytes):
            self.request_close(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported")
            raise TransportClosed("a binary frame")
        if self._count_in is not None:
            self._count_in(1)
        return frame

    async def aclose(self) -> None:
        self.request_close(1000, "")


def take_batch(queue: deque[bytes], max_bytes: int) -> tuple[bytes, int]:
    """Pops the queue's first messages into one JSON-RPC batch of at most ``max_bytes``.

    Returns the frame and how many messages it holds; a first message too large to share a
    frame (or alone in the queue) is returned as itself, not wrapped.
    """
    first = queue.popleft()
    size = len(first) + 2
    if not queue or size + 1 + len(queue[0]) > max_bytes:
        return first, 1
    parts = [first]
    while queue and size + 1 + len(queue[0]) <= max_bytes:
        message = queue.popleft()
        parts.append(message)
        size += 1 + len(message)
    return b"[" + b",".join(parts) + b"]", len(parts)


def _describe(exc: ConnectionClosed) -> str:
    rcvd, sent = exc.rcvd, exc.sent
    if sent is not None and sent.code == 1009:
        return "a frame over the size limit (closed 1009)"
    if rcvd is not None:
        return f"viewer closed ({rcvd.code})"
    if sent is not None:
        return f"closed by us ({sent.code})"
    return "connection lost"
