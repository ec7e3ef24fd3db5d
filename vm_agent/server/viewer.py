"""One viewer's websocket: authenticate, then serve JSON-RPC until either side leaves."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.server import ServerConnection

from vm_agent.jsonrpc import messages as m
from vm_agent.jsonrpc.connection import Connection
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.jsonrpc.transport import TransportClosed
from vm_agent.server import params as p
from vm_agent.server.fanout import FanOut
from vm_agent.server.methods import ViewerContext, ViewerMethods
from vm_agent.server.prompts import PromptRuns
from vm_agent.server.protocols import Identity, TokenVerifier
from vm_agent.server.transport import CLOSE_UNAUTHORIZED, WebSocketTransport
from vm_agent.session.supervisor import Supervisor

log = logging.getLogger(__name__)


class AuthFailed(Exception):
    """Why a viewer was refused: for our log only; the viewer learns 'unauthorized'."""


@dataclass(eq=False)
class ViewerDeps:
    """What every viewer shares, handed down by the server."""

    supervisor: Supervisor
    fanout: FanOut
    prompts: PromptRuns
    verifier: TokenVerifier
    server_tg: TaskGroup
    auth_timeout_s: float
    on_auth_failure: Callable[[], None]


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <jwt>`` header, or None when there is none."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""  # present but unusable: refused like a bad token
    return token.strip()


async def authenticate(
    ws: ServerConnection, transport: WebSocketTransport, deps: ViewerDeps
) -> Identity:
    """Checks the upgrade's bearer token, or else waits for a first ``auth`` message."""
    token = bearer_token(ws.request.headers.get("Authorization") if ws.request else None)
    if token is not None:
        return await _verify(deps.verifier, token)
    with anyio.move_on_after(deps.auth_timeout_s):
        try:
            frame = await transport.receive()
        except TransportClosed as exc:
            raise AuthFailed(f"gone before authenticating: {exc}") from None
        msg = m.parse(frame)
        if not isinstance(msg, m.Request) or msg.method != "auth":
            raise AuthFailed("the first message is not an auth request")
        try:
            args = p.parse(p.AuthParams, "auth", msg.params)
        except JsonRpcError as exc:
            raise AuthFailed(exc.message) from None
        identity = await _verify(deps.verifier, args.token)
        transport.offer(m.encode_result(msg.id, {"subject": identity.subject}))
        return identity
    raise AuthFailed(f"no auth message within {deps.auth_timeout_s:g}s")


async def _verify(verifier: TokenVerifier, token: str) -> Identity:
    if not token:
        raise AuthFailed("malformed Authorization header")
    try:
        return await verifier.verify(token)
    except Exception as exc:  # Unauthorized, and whatever else a verifier may raise
        raise AuthFailed(f"token refused: {exc}") from None


async def serve_viewer(
    ws: ServerConnection, transport: WebSocketTransport, deps: ViewerDeps, name: str
) -> None:
    """Runs one viewer to its end (the websocket handler's body)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(transport.run_writer)
        try:
            identity = await authenticate(ws, transport, deps)
        except AuthFailed as exc:
            deps.on_auth_failure()
            log.warning("%s: unauthorized: %s", name, exc)
            transport.request_close(CLOSE_UNAUTHORIZED, "unauthorized")
            return  # the writer closes the socket; the group waits for it
        log.info("%s: authenticated as %s", name, identity.subject)
        methods = ViewerMethods(
            ViewerContext(
                name=name,
                identity=identity,
                transport=transport,
                supervisor=deps.supervisor,
                fanout=deps.fanout,
                prompts=deps.prompts,
                server_tg=deps.server_tg,
                viewer_tg=tg,
            )
        )
        conn = Connection(transport, methods.router(), name=name, answer_invalid=True)
        try:
            await conn.run()
        finally:
            methods.close()
            transport.request_close(1000, "")  # no-op when a close is already on its way
            # The writer sends the close (with its code) before the subscriptions go.
            await transport.closed.wait()
            tg.cancel_scope.cancel()
