"""The gateway's websocket to the daemon's viewer API, kept up across drops.

``run`` connects (bearer token, TLS when the URL is wss://), re-subscribes every session
the client has open from the last seq its ``Feed`` saw, and reconnects with a backoff when
the connection drops. ``call`` sends a request on whichever connection is up and sends it
again on the next one if the connection dropped before the answer: every request the
gateway makes may be repeated (a prompt carries its ``prompt_id``, a start its
``session_id``), so the client never notices a drop.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskStatus
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from vm_agent.jsonrpc.connection import Connection, NotificationHandler, PeerClosed, router
from vm_agent.jsonrpc.errors import INTERNAL_ERROR, JsonRpcError
from vm_agent.jsonrpc.ws_client import WebSocketClientTransport

log = logging.getLogger(__name__)

_MAX_FRAME = 64 * 1024 * 1024
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.2, 5.0
# How long a call waits for the daemon to come back before the client is told it cannot.
DOWN_LIMIT_S = 120.0
EVENTS_DROPPED = -32004  # the viewer API's code: retention dropped events asked for
CLOSE_UNAUTHORIZED = 4001  # the daemon closes a viewer whose token expired with this
_RETRYABLE = (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, PeerClosed)


class LinkFailed(Exception):
    """The daemon refused us for good (a bad token), or stayed out of reach too long."""


class DaemonLink:
    def __init__(
        self,
        url: str,
        token: str,
        tls: ssl.SSLContext | None,
        on_event: NotificationHandler,
        resume_points: Callable[[], dict[str, int]],
        *,
        renew: Callable[[], Awaitable[str]] | None = None,
        server_hostname: str | None = None,
    ) -> None:
        """``resume_points``: the open sessions with the last seq seen of each. ``renew``:
        a fresh token, asked when the daemon closes the connection because the token
        expired (4001) or refuses it (401) at a reconnect (``--task``: the control plane
        mints it); without it, either ends the link. ``server_hostname``: the name the
        daemon's certificate must carry when it is not the URL's host."""
        self.url = url
        self._token = token
        self._tls = tls
        self._renew = renew
        self._server_hostname = server_hostname
        self._stale = False  # the token expired: renew it before the next handshake
        self._transport: WebSocketClientTransport | None = None
        self.renewals = 0  # tokens renewed (tests and logs)
        self._on_event = on_event
        self._resume_points = resume_points
        self._conn: Connection | None = None
        self._changed = anyio.Event()  # set (and replaced) when the connection comes or goes
        self._subscribed: set[str] = set()  # on the current connection
        self.failed: str | None = None
        self.connections = 0  # handshakes that succeeded (tests and logs)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connects for good; ``started`` after the first connection (raises LinkFailed
        if that one fails: a wrong URL or token is the user's to fix, not to retry). Later
        failures end it quietly: the client's calls are then answered with the reason."""
        delay = _BACKOFF_FIRST_S
        started = False
        down_for = 0.0
        while True:
            try:
                async with self._connection() as conn:
                    delay, down_for = _BACKOFF_FIRST_S, 0.0
                    async with anyio.create_task_group() as tg:
                        await tg.start(conn.run)
                        self._conn, self._subscribed = conn, set()
                        tg.start_soon(self._resubscribe, conn)
                        self._notify()
                        if not started:
                            task_status.started()
                            started = True
                        await conn.closed.wait()
                        tg.cancel_scope.cancel()
                    if self._closed_for_expiry():
                        log.info("the daemon closed the connection: the token expired")
                        self._stale = True
                    log.warning("the connection to the daemon dropped; resuming")
            except (LinkFailed, *_RETRYABLE) as exc:
                if not started:
                    why = str(exc) if isinstance(exc, LinkFailed) else f"cannot connect: {exc}"
                    raise LinkFailed(why) from exc
                if isinstance(exc, LinkFailed):
                    self._fail(str(exc))  # later calls are answered with this reason
                    return
                log.warning("cannot reach the daemon (%s); retrying in %.1f s", exc, delay)
            finally:
                self._conn = None
                self._notify()
            if down_for > DOWN_LIMIT_S:
                self._fail(f"the daemon at {self.url} stayed out of reach for {down_for:.0f} s")
                return
            await anyio.sleep(delay)
            down_for += delay
            delay = min(_BACKOFF_MAX_S, delay * 2)

    def _fail(self, why: str) -> None:
        self.failed = why
        self._notify()  # wakes callers, who then see `failed`

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """One connection; its websocket is closed when the block ends."""
        conn = await self._open()
        try:
            yield conn
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await conn.aclose()

    def _closed_for_expiry(self) -> bool:
        return self._transport is not None and self._transport.close_code == CLOSE_UNAUTHORIZED

    async def _open(self) -> Connection:
        renewed = False
        if self._stale and self._renew is not None:
            self._token = await self._renew()  # OSError when it cannot: retried
            self._stale, renewed = False, True
            self.renewals += 1
            log.warning("renewed the viewer token (the last one expired)")
        tls: dict[str, Any] = {} if self._tls is None else {"ssl": self._tls}
        if self._tls is not None and self._server_hostname is not None:
            tls["server_hostname"] = self._server_hostname
        try:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                max_size=_MAX_FRAME,
                proxy=None,
                **tls,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401 and self._renew is not None and not renewed:
                self._stale = True  # expired while we were away: once more, renewed
                return await self._open()
            if status in (401, 403):
                raise LinkFailed(f"the daemon refused the token (HTTP {status})") from exc
            raise
        self.connections += 1
        self._transport = WebSocketClientTransport(ws)
        return Connection(
            self._transport,
            router(notifications={"session/event": self._on_event}),
            name="daemon",
        )

    async def _resubscribe(self, conn: Connection) -> None:
        for session_id in list(self._resume_points()):
            await self._subscribe_on(conn, session_id)

    async def _subscribe_on(self, conn: Connection, session_id: str) -> None:
        if session_id in self._subscribed:
            return
        self._subscribed.add(session_id)
        after = self._resume_points().get(session_id, 0)
        while True:
            params = {"session_id": session_id, "after_seq": after}
            try:
                await conn.request("session/subscribe", params)
                return
            except PeerClosed:
                return  # the next connection subscribes again
            except JsonRpcError as exc:
                first = exc.data.get("first_available_seq") if isinstance(exc.data, dict) else None
                if exc.code != EVENTS_DROPPED or not isinstance(first, int) or first <= after:
                    log.error("cannot follow session %s from seq %d: %s", session_id, after, exc)
                    return
                # Retention dropped what we missed while away: go on from what is left.
                log.error(
                    "session %s: events %d..%d were dropped", session_id, after + 1, first - 1
                )
                after = first - 1

    async def subscribe(self, session_id: str) -> None:
        """Follows a session the client opened (it must be in ``resume_points`` already)."""
        while True:
            conn = await self._connected()
            await self._subscribe_on(conn, session_id)
            if conn.close_reason is None:
                return

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """The daemon's answer; a drop before it means asking again on the next connection."""
        while True:
            conn = await self._connected()
            try:
                return await conn.request(method, params)
            except PeerClosed:
                await conn.closed.wait()

    async def call_once(self, method: str, params: dict[str, Any]) -> Any:
        """Like ``call``, but a drop before the answer raises ``PeerClosed``: for a request
        whose repetition the caller must check first (a start under a given id)."""
        conn = await self._connected()
        return await conn.request(method, params)

    async def _connected(self) -> Connection:
        while True:
            if self.failed is not None:
                raise JsonRpcError(INTERNAL_ERROR, f"vm-agent gateway: {self.failed}")
            conn = self._conn
            if conn is not None and conn.close_reason is None:
                return conn
            await self._changed.wait()
