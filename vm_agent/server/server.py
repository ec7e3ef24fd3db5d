"""The viewer API server: ``/v1/ws`` (JSON-RPC over websocket), ``/health``, ``/metrics``.

The websockets library runs one asyncio task per connection; each viewer's own tasks (its
writer, its subscriptions) live in a task group inside that handler, and prompts live in
the server's task group so that they outlive the viewer that asked.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from anyio.abc import TaskGroup, TaskStatus
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from vm_agent.eventlog import EventLog
from vm_agent.server import http
from vm_agent.server.fanout import FanOut
from vm_agent.server.prompts import PromptRuns
from vm_agent.server.protocols import ServerMetrics, TokenVerifier
from vm_agent.server.transport import WebSocketTransport
from vm_agent.server.viewer import ViewerDeps, serve_viewer
from vm_agent.session.supervisor import Supervisor
from vm_agent.settings import Settings

log = logging.getLogger(__name__)

WS_PATH = "/v1/ws"
PEER = "viewer"
DEFAULT_SEND_BUFFER_BYTES = 256 * 1024
_BATCH_VALUES = {"1": True, "true": True, "0": False, "false": False}


def batch_requested(path: str) -> bool:
    """Whether the upgrade's query asks for batched frames (``?batch=1``).

    Raises ValueError, with a message for the viewer, for a value we do not know.
    """
    values = parse_qs(urlsplit(path).query, keep_blank_values=True).get("batch", [])
    if not values:
        return False
    if len(values) > 1 or values[0].lower() not in _BATCH_VALUES:
        raise ValueError("batch must be given once, as 1, true, 0 or false")
    return _BATCH_VALUES[values[0].lower()]


class ViewerServer:
    def __init__(
        self,
        *,
        settings: Settings,
        supervisor: Supervisor,
        log: EventLog,
        verifier: TokenVerifier,
        metrics: ServerMetrics | None = None,
        health: http.HealthExtra | None = None,
        auth_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
        viewer_send_buffer_bytes: int | None = DEFAULT_SEND_BUFFER_BYTES,
    ) -> None:
        """``viewer_send_buffer_bytes`` caps the kernel's send buffer of each viewer socket
        (None keeps the system's autotuning, up to several MiB a viewer), so that what a
        viewer that stops reading can hold is about its queue and no more."""
        self.settings = settings
        self.supervisor = supervisor
        self.log = log
        self.verifier = verifier
        self.metrics = metrics
        self.health = health
        self.auth_timeout_s = auth_timeout_s
        self.close_timeout_s = close_timeout_s
        self.viewer_send_buffer_bytes = viewer_send_buffer_bytes
        self.fanout = FanOut(log)
        self.prompts = PromptRuns()
        self._started = time.monotonic()
        self._ws_server: Server | None = None
        self._accepting = True
        self._viewers: dict[int, WebSocketTransport] = {}
        self._viewer_ids = itertools.count(1)
        self._no_viewers = anyio.Event()
        self._no_viewers.set()

    @property
    def viewer_count(self) -> int:
        return len(self._viewers)

    async def serve(
        self, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listens until cancelled; ``task_status.started(bound_port)`` once listening."""
        remove_listener = self.fanout.attach()
        try:
            async with anyio.create_task_group() as tg:
                server = await serve(
                    lambda ws: self._handle(ws, tg),
                    host,
                    port,
                    process_request=self._process_request,
                    max_size=self.settings.max_frame_bytes,
                    compression=None,
                    server_header=None,
                    logger=logging.getLogger("vm_agent.server.websockets"),
                )
                self._ws_server = server
                bound = server.sockets[0].getsockname()[1]
                log.info("viewer API listening on %s:%d", host, bound)
                task_status.started(bound)
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._close_server(server)
        finally:
            remove_listener()

    async def _close_server(self, server: Server) -> None:
        self._accepting = False
        server.close(close_connections=True, code=1001, reason="daemon shutting down")
        with anyio.move_on_after(self.close_timeout_s + 1):
            await server.wait_closed()

    def stop_accepting(self) -> None:
        """Stops listening; viewers already connected stay until ``close_viewers``."""
        self._accepting = False
        if self._ws_server is not None:
            self._ws_server.server.close()

    async def close_viewers(self, code: int = 1001, reason: str = "daemon shutting down") -> None:
        """Closes every viewer with ``code`` and waits (bounded) until they are gone."""
        for transport in list(self._viewers.values()):
            transport.request_close(code, reason)
        with anyio.move_on_after(self.close_timeout_s + 1):
            await self._no_viewers.wait()

    # -- HTTP -------------------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == WS_PATH:
            if not self._accepting:
                return http.json_response(conn, 503, {"error": "daemon shutting down"})
            try:
                batch_requested(request.path)
            except ValueError as exc:
                return http.json_response(conn, 400, {"error": str(exc)})
            return None  # on to the websocket handshake
        if path == "/health":
            return http.json_response(conn, 200, self.health_report())
        if path == "/metrics":
            if self.metrics is None:
                return http.not_found(conn)
            body, content_type = self.metrics.render()
            return http.respond(conn, 200, body, content_type)
        return http.not_found(conn)

    def health_report(self) -> dict[str, Any]:
        extra: dict[str, Any] | None = None
        if self.health is not None:
            try:
                extra = self.health()
            except Exception:
                log.exception("health callback failed")
                extra = {"health_callback": "failed"}
        return http.health_body(
            node_id=self.settings.node_id,
            accepting=self._accepting,
            states=[s.state.value for s in self.supervisor.sessions.values()],
            uptime_s=time.monotonic() - self._started,
            viewers=self.viewer_count,
            extra=extra,
        )

    # -- viewers ----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection, tg: TaskGroup) -> None:
        viewer_id = next(self._viewer_ids)
        name = f"viewer {viewer_id} ({_peer(ws)})"
        if self.viewer_send_buffer_bytes is not None:
            _cap_send_buffer(ws, self.viewer_send_buffer_bytes)
        metrics = self.metrics
        transport = WebSocketTransport(
            ws,
            queue_limit=self.settings.viewer_queue_limit,
            on_overflow=lambda: self._overflowed(name),
            count_in=self._counter("in"),
            count_out=self._counter("out"),
            close_timeout_s=self.close_timeout_s,
            batch=batch_requested(ws.request.path) if ws.request else False,
        )
        self._viewers[viewer_id] = transport
        self._no_viewers = anyio.Event()
        if metrics is not None:
            metrics.viewers_connected.inc()
        deps = ViewerDeps(
            supervisor=self.supervisor,
            fanout=self.fanout,
            prompts=self.prompts,
            verifier=self.verifier,
            server_tg=tg,
            auth_timeout_s=self.auth_timeout_s,
            on_auth_failure=self._auth_failed,
        )
        try:
            await serve_viewer(ws, transport, deps, name)
        except Exception:
            # Never the daemon's end: log it, and the library closes this one socket.
            log.exception("%s: failed", name)
        finally:
            del self._viewers[viewer_id]
            if not self._viewers:
                self._no_viewers.set()
            if metrics is not None:
                metrics.viewers_connected.dec()
            log.info("%s: gone (close code %s)", name, transport.close_code)

    def _counter(self, direction: str) -> Any:
        if self.metrics is None:
            return None
        child = self.metrics.jsonrpc_messages_total.labels(peer=PEER, direction=direction)
        return child.inc

    def _overflowed(self, name: str) -> None:
        log.warning("%s: outgoing queue full; closing it (it may resume with after_seq)", name)
        if self.metrics is not None:
            self.metrics.viewer_overflows_total.inc()

    def _auth_failed(self) -> None:
        if self.metrics is not None:
            self.metrics.ws_auth_failures_total.inc()


def _cap_send_buffer(ws: ServerConnection, size: int) -> None:
    sock = ws.transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError as exc:
        log.debug("cannot cap the send buffer: %s", exc)


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if address else "?"
