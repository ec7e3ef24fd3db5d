"""The viewer API server: ``/v1/ws`` (JSON-RPC over websocket), ``/health``, ``/metrics``.

A connection passes three doors before it costs more than a socket. The gate, at accept:
caps on all connections, per source address, and unauthenticated ones (``admission``).
TLS, when the settings name a certificate and key. Then the upgrade: a bearer token on it
is verified before the websocket exists (a bad one is HTTP 401); without one the viewer
must send ``auth`` first, and until it has, its frames are held to 32 KiB and two of them
buffered (``connections``), so a stranger's fat frames are refused (close 1009) instead of
read into memory.

The websockets library runs one asyncio task per connection; each viewer's own tasks (its
writer, its subscriptions, its token's expiry) live in a task group inside that handler,
and prompts live in the server's task group so that they outlive the viewer that asked.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from anyio.abc import TaskGroup, TaskStatus
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from vm_agent.eventlog import EventLog
from vm_agent.runtime.settings import Settings
from vm_agent.server import connections as conns
from vm_agent.server import http
from vm_agent.server.admission import Admission, Limits
from vm_agent.server.fanout import FanOut
from vm_agent.server.gate import Gate, GatedListener, quiet_asyncio_accept_errors
from vm_agent.server.incidents import Incidents
from vm_agent.server.prompts import PromptRuns
from vm_agent.server.protocols import Identity, ServerMetrics, TokenVerifier
from vm_agent.server.transport import WebSocketTransport
from vm_agent.server.viewer import AuthFailed, ViewerDeps, bearer_token, serve_viewer, verify
from vm_agent.session.supervisor import Supervisor

log = logging.getLogger(__name__)

WS_PATH = "/v1/ws"
PEER = "viewer"
DEFAULT_SEND_BUFFER_BYTES = 256 * 1024
LISTEN_BACKLOG = 512
METRICS_CONNECTIONS = 16
OPEN_TIMEOUT_S = 10.0  # for the TLS handshake, then again for the HTTP upgrade
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


def limits_of(settings: Settings) -> Limits:
    return Limits(
        total=settings.max_connections,
        per_address=settings.max_connections_per_address,
        unauthenticated=settings.max_unauthenticated,
        unauthenticated_per_address=settings.max_unauthenticated_per_address,
        new_per_address_per_s=settings.max_new_connections_per_address_per_s,
    )


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
        ssl_context: ssl.SSLContext | None = None,
        auth_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
        viewer_send_buffer_bytes: int | None = DEFAULT_SEND_BUFFER_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``viewer_send_buffer_bytes`` caps the kernel's send buffer of each viewer socket
        (None keeps the system's autotuning, up to several MiB a viewer), so that what a
        viewer that stops reading can hold is about its queue and no more. ``health`` adds
        to the node-scope ``/status``; ``clock`` is the wall clock tokens expire by."""
        self.settings = settings
        self.supervisor = supervisor
        self.log = log
        self.verifier = verifier
        self.metrics = metrics
        self.health = health
        self.ssl_context = ssl_context
        self.auth_timeout_s = auth_timeout_s
        self.close_timeout_s = close_timeout_s
        self.viewer_send_buffer_bytes = viewer_send_buffer_bytes
        self.clock = clock
        self.fanout = FanOut(log)
        self.prompts = PromptRuns()
        self.admission = Admission(limits_of(settings))
        self.incidents = Incidents(metrics)
        self.gate = Gate(
            self.admission,
            on_refused=self.incidents.refused,
            on_accept_error=self.incidents.accept_error,
            on_evicted=self.incidents.evicted,
        )
        # The loopback metrics port has its own small caps: neither can crowd out the other.
        self.metrics_gate = Gate(
            Admission(Limits(*(METRICS_CONNECTIONS,) * 4)),
            on_refused=self.incidents.refused,
            on_accept_error=self.incidents.accept_error,
        )
        self.metrics_port: int | None = None  # bound, when settings.metrics_port is set
        self._started = time.monotonic()
        self._ws_servers: list[Server] = []
        self._accepting = True
        self._viewers: dict[int, WebSocketTransport] = {}
        self._viewer_ids = itertools.count(1)
        self._no_viewers = anyio.Event()
        self._no_viewers.set()
        # Identities from the upgrade's bearer token, until the handler takes them.
        self._identities: weakref.WeakKeyDictionary[ServerConnection, Identity] = (
            weakref.WeakKeyDictionary()
        )
        if metrics is not None:
            metrics.set_connection_source(
                lambda: (self.admission.total, self.admission.unauthenticated)
            )

    @property
    def viewer_count(self) -> int:
        return len(self._viewers)

    @property
    def scheme(self) -> str:
        return "wss" if self.ssl_context is not None else "ws"

    async def serve(
        self, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listens until cancelled; ``task_status.started(bound_port)`` once listening."""
        remove_listener = self.fanout.attach()
        quiet_asyncio_accept_errors()
        try:
            async with anyio.create_task_group() as tg:
                server = await self._listen(
                    self.gate.listen(host, port, LISTEN_BACKLOG),
                    lambda ws: self._handle(ws, tg),
                    self._process_request,
                    self.ssl_context,
                )
                bound = server.sockets[0].getsockname()[1]
                log.info("viewer API listening on %s://%s:%d", self.scheme, host, bound)
                if self.settings.metrics_port is not None:
                    metrics_server = await self._listen(
                        self.metrics_gate.listen(
                            "127.0.0.1", self.settings.metrics_port, METRICS_CONNECTIONS
                        ),
                        _no_websocket,
                        self._metrics_only,
                        None,
                    )
                    self.metrics_port = metrics_server.sockets[0].getsockname()[1]
                    log.info("metrics on http://127.0.0.1:%d/metrics", self.metrics_port)
                task_status.started(bound)
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._close_servers()
        finally:
            remove_listener()

    async def _listen(
        self,
        listener: GatedListener,
        handler: Callable[[ServerConnection], Any],
        process_request: Callable[[ServerConnection, Request], Any],
        ssl_context: ssl.SSLContext | None,
    ) -> Server:
        try:
            server = await serve(
                handler,
                sock=listener,
                ssl=ssl_context,
                backlog=LISTEN_BACKLOG,
                process_request=process_request,
                open_timeout=OPEN_TIMEOUT_S,
                max_size=conns.PREAUTH_FRAME_BYTES,
                max_queue=conns.PREAUTH_QUEUE,
                compression=None,
                server_header=None,
                logger=conns.library_logger(),
            )
        except BaseException:
            listener.close()
            raise
        self._ws_servers.append(server)
        return server

    async def _close_servers(self) -> None:
        self._accepting = False
        for server in self._ws_servers:
            server.close(close_connections=True, code=1001, reason="daemon shutting down")
        with anyio.move_on_after(self.close_timeout_s + 1):
            for server in self._ws_servers:
                await server.wait_closed()

    def stop_accepting(self) -> None:
        """Stops listening; viewers already connected stay until ``close_viewers``."""
        self._accepting = False
        for server in self._ws_servers:
            server.server.close()

    async def close_viewers(self, code: int = 1001, reason: str = "daemon shutting down") -> None:
        """Closes every viewer with ``code`` and waits (bounded) until they are gone."""
        for transport in list(self._viewers.values()):
            transport.request_close(code, reason)
        with anyio.move_on_after(self.close_timeout_s + 1):
            await self._no_viewers.wait()

    # -- HTTP -------------------------------------------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == WS_PATH:
            return await self._upgrade(conn, request)
        if path == "/health":
            return http.json_response(
                conn, 200 if self._accepting else 503, http.health_body(accepting=self._accepting)
            )
        if path in ("/metrics", "/status"):
            refused = await http.node_only(conn, request, self.verifier, self.incidents)
            if refused is not None:
                return refused
            fd = conns.fileno(conn)
            if fd is not None:
                self.gate.authenticated(fd)  # the scraper is not a stranger
            return self._metrics(conn) if path == "/metrics" else self._status(conn)
        return http.not_found(conn)

    async def _metrics_only(self, conn: ServerConnection, request: Request) -> Response:
        """The loopback metrics port: ``/metrics`` without a token, nothing else."""
        if urlsplit(request.path).path == "/metrics":
            return self._metrics(conn)
        return http.not_found(conn)

    def _metrics(self, conn: ServerConnection) -> Response:
        return http.metrics_response(conn, self.metrics)

    def _status(self, conn: ServerConnection) -> Response:
        return http.json_response(conn, 200, self.status_report())

    async def _upgrade(self, conn: ServerConnection, request: Request) -> Response | None:
        if not self._accepting:
            return http.json_response(conn, 503, {"error": "daemon shutting down"})
        try:
            batch_requested(request.path)
        except ValueError as exc:
            return http.json_response(conn, 400, {"error": str(exc)})
        headers = request.headers.get_all("Authorization")
        if not headers:
            return None  # the first-message path: the pre-auth limits hold until then
        try:
            if len(headers) > 1:
                raise AuthFailed("more than one Authorization header")
            identity = await verify(self.verifier, bearer_token(headers[0]) or "")
        except AuthFailed as exc:
            self.incidents.auth_failed(f"upgrade from {conns.peer(conn)}", str(exc))
            return http.unauthorized(conn)
        self._identities[conn] = identity
        self._lift_limits(conn)
        return None

    def status_report(self) -> dict[str, Any]:
        extra: dict[str, Any] | None = None
        if self.health is not None:
            try:
                extra = self.health()
            except Exception:
                log.exception("health callback failed")
                extra = {"health_callback": "failed"}
        return http.status_body(
            node_id=self.settings.node_id,
            accepting=self._accepting,
            states=[s.state.value for s in self.supervisor.sessions.values()],
            uptime_s=time.monotonic() - self._started,
            viewers=self.viewer_count,
            extra=extra,
        )

    # -- viewers ----------------------------------------------------------------------------

    def _lift_limits(self, ws: ServerConnection) -> None:
        """Authenticated: full frames and queue, and out of the unauthenticated pool."""
        fd = conns.lift_limits(ws, self.settings.max_frame_bytes)
        if fd is not None:
            self.gate.authenticated(fd)

    async def _handle(self, ws: ServerConnection, tg: TaskGroup) -> None:
        viewer_id = next(self._viewer_ids)
        name = f"viewer {viewer_id} ({conns.peer(ws)})"
        identity = self._identities.pop(ws, None)
        authenticated = identity is not None
        if self.viewer_send_buffer_bytes is not None:
            conns.cap_send_buffer(ws, self.viewer_send_buffer_bytes)
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

        def on_authenticated() -> None:
            nonlocal authenticated
            authenticated = True
            self._lift_limits(ws)

        deps = ViewerDeps(
            supervisor=self.supervisor,
            fanout=self.fanout,
            prompts=self.prompts,
            verifier=self.verifier,
            server_tg=tg,
            auth_timeout_s=self.auth_timeout_s,
            on_auth_failure=self.incidents.auth_failed,
            on_authenticated=on_authenticated,
            on_expired=self.incidents.token_expired,
            clock=self.clock,
        )
        try:
            await serve_viewer(transport, deps, name, identity)
        except Exception:
            # Never the daemon's end: log it, and the library closes this one socket.
            log.exception("%s: failed", name)
        finally:
            del self._viewers[viewer_id]
            if not self._viewers:
                self._no_viewers.set()
            if metrics is not None:
                metrics.viewers_connected.dec()
            # Strangers' comings and goings are not worth a line each (a flood would be).
            log.log(
                logging.INFO if authenticated else logging.DEBUG,
                "%s: gone (close code %s)",
                name,
                transport.close_code,
            )

    def _counter(self, direction: str) -> Any:
        if self.metrics is None:
            return None
        child = self.metrics.jsonrpc_messages_total.labels(peer=PEER, direction=direction)
        return child.inc

    def _overflowed(self, name: str) -> None:
        log.warning("%s: outgoing queue full; closing it (it may resume with after_seq)", name)
        if self.metrics is not None:
            self.metrics.viewer_overflows_total.inc()


async def _no_websocket(ws: ServerConnection) -> None:
    """The metrics port answers every request over HTTP; no upgrade reaches this."""
