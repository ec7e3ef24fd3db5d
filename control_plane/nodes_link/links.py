"""One JSON-RPC connection per node, opened on first use, shared by that node's tasks and
reopened after it drops (each call the dispatcher makes is idempotent, so a call cut by a
drop is made again on a later pass; events come through the outbox, not this connection).

Every connection belongs to the links' task group; a prompt's long call runs there too,
so a prompt outlives the pass that sent it, never the links.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.client import connect

from vm_agent.jsonrpc.connection import Connection, PeerClosed, router
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.jsonrpc.ws_client import WebSocketClientTransport

log = logging.getLogger("control_plane.nodes_link")

_MAX_FRAME = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0


class NodeUnreachable(Exception):
    """The node's `/v1/ws` could not be reached or refused us (retried on a later pass)."""


class Target(Protocol):
    """Where a node is reached (the dispatcher's NodeTarget is one)."""

    @property
    def node_id(self) -> str: ...
    @property
    def viewer_url(self) -> str: ...
    @property
    def tls_name(self) -> str | None:  # None: plain ws:// (loopback only)
        ...


def _key(target: Target) -> tuple[str, str, str | None]:
    return (target.node_id, target.viewer_url, target.tls_name)


# Checks the node's certificate (DER) once TLS has verified it against the node CA: that it
# is the one on record (control_plane.identity.node_certs); returns why it is refused, or
# None. Runs in a worker thread.
PeerCheck = Callable[[str, bytes], str | None]
TokenFor = Callable[[str], str]
OnOutcome = Callable[[str, str, dict[str, Any] | None, JsonRpcError | None], Awaitable[None]]


@dataclass
class _Link:
    target: Target
    conn: Connection
    closed: anyio.Event


class NodeLinks:
    """Calls on nodes' `/v1/ws`: `call` waits for the answer; `start_prompt` returns once
    the request is written and reports the outcome through `on_outcome`."""

    def __init__(
        self,
        tg: TaskGroup,
        token_for: TokenFor,
        ca_pem: Callable[[], str],
        *,
        peer_check: PeerCheck | None = None,
    ) -> None:
        self._tg = tg
        self._token_for = token_for
        self._ca_pem = ca_pem
        self._peer_check = peer_check
        self._links: dict[str, _Link] = {}
        self._opening: dict[str, anyio.Lock] = {}
        self.in_flight: set[str] = set()  # prompt ids with a call out from this replica
        self.connections_opened = 0

    def _tls(self, target: Target) -> dict[str, Any]:
        if target.tls_name is None:
            return {}
        ctx = ssl.create_default_context(cadata=self._ca_pem())
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return {"ssl": ctx, "server_hostname": target.tls_name}

    async def _open(self, target: Target) -> _Link:
        headers = {"Authorization": f"Bearer {self._token_for(target.node_id)}"}
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                ws = await connect(
                    target.viewer_url,
                    additional_headers=headers,
                    max_size=_MAX_FRAME,
                    proxy=None,
                    **self._tls(target),
                )
        except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
            raise NodeUnreachable(f"{target.node_id}: {exc}") from exc
        except Exception as exc:  # websockets' InvalidStatus/InvalidHandshake: refused
            raise NodeUnreachable(f"{target.node_id}: {exc}") from exc
        if self._peer_check is not None and target.tls_name is not None:
            der = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
            # reads the record in the database: off the event loop
            why = await anyio.to_thread.run_sync(self._peer_check, target.node_id, der)
            if why is not None:
                await ws.close()
                raise NodeUnreachable(f"{target.node_id}: certificate refused: {why}")
        conn = Connection(WebSocketClientTransport(ws), router(), name=f"node {target.node_id}")
        link = _Link(target, conn, anyio.Event())
        await self._tg.start(self._serve, link)
        self.connections_opened += 1
        log.info("connected to node %s at %s", target.node_id, target.viewer_url)
        return link

    async def _serve(self, link: _Link, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(link.conn.run)
                task_status.started()
        finally:
            link.closed.set()
            if self._links.get(link.target.node_id) is link:
                del self._links[link.target.node_id]
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await link.conn.aclose()
            log.info("connection to node %s closed", link.target.node_id)

    async def _link(self, target: Target) -> _Link:
        lock = self._opening.setdefault(target.node_id, anyio.Lock())
        async with lock:
            link = self._links.get(target.node_id)
            if link is not None and (link.closed.is_set() or _key(link.target) != _key(target)):
                await link.conn.aclose()
                link = None
            if link is None:
                link = self._links[target.node_id] = await self._open(target)
            return link

    async def call(
        self, target: Target, method: str, params: dict[str, Any], *, limit_s: float
    ) -> Any:
        """The answer (JsonRpcError for an error answer; NodeUnreachable for a dropped link)."""
        link = await self._link(target)
        try:
            with anyio.fail_after(limit_s):
                return await link.conn.request(method, params)
        except (PeerClosed, TimeoutError) as exc:
            raise NodeUnreachable(f"{target.node_id}: {method}: {exc}") from exc

    async def start_prompt(
        self,
        target: Target,
        params: dict[str, Any],
        on_outcome: OnOutcome,
        *,
        limit_s: float,
    ) -> None:
        """Sends `session/prompt` and returns once it is written; the outcome (or the error
        answer) goes to `on_outcome(session_id, prompt_id, outcome, error)`."""
        link = await self._link(target)
        prompt_id = str(params["prompt_id"])
        if prompt_id in self.in_flight:
            return
        sent = anyio.Event()
        self.in_flight.add(prompt_id)

        async def wait() -> None:
            try:
                with anyio.fail_after(limit_s):
                    result = await link.conn.request("session/prompt", params, sent=sent)
            except JsonRpcError as exc:
                await on_outcome(str(params["session_id"]), prompt_id, None, exc)
            except (PeerClosed, TimeoutError) as exc:
                log.info("prompt %s on node %s: no answer (%s)", prompt_id, target.node_id, exc)
            else:
                await on_outcome(str(params["session_id"]), prompt_id, result, None)
            finally:
                self.in_flight.discard(prompt_id)
                sent.set()

        self._tg.start_soon(wait)
        await sent.wait()
        if link.closed.is_set():
            raise NodeUnreachable(f"{target.node_id}: closed while sending the prompt")
