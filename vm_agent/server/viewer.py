"""One viewer's websocket: authenticate, then serve JSON-RPC until either side leaves.

A viewer authenticates either with ``Authorization: Bearer <jwt>`` on the upgrade, which
the server checks before the websocket exists (a bad one is HTTP 401), or, with no such
header (a browser cannot set one), with a first message ``auth {token}`` within the auth
timeout; until then its frames are held to the small pre-auth limit. Either way the
connection is closed with 4001 when the token expires (``exp`` plus the verifier's leeway).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from vm_agent.jsonrpc import messages as m
from vm_agent.jsonrpc.connection import Connection
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.jsonrpc.transport import TransportClosed
from vm_agent.server import params as p
from vm_agent.server.access import Grant
from vm_agent.server.fanout import FanOut
from vm_agent.server.methods import ViewerContext, ViewerMethods
from vm_agent.server.prompts import PromptRuns
from vm_agent.server.protocols import Identity, TokenVerifier
from vm_agent.server.transport import CLOSE_UNAUTHORIZED, WebSocketTransport
from vm_agent.session.supervisor import Supervisor

log = logging.getLogger(__name__)

EXPIRED_REASON = "token expired"


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
    on_auth_failure: Callable[[str, str], None]  # (viewer name, why): counted, logged
    on_authenticated: Callable[[], None]  # by first message: lift the pre-auth limits
    on_expired: Callable[[], None]
    clock: Callable[[], float] = field(default=time.time)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <jwt>`` header, or None when there is none."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""  # present but unusable: refused like a bad token
    return token.strip()


def grant_of(identity: Identity) -> Grant:
    return Grant(
        subject=identity.subject,
        read=identity.can_read,
        write=identity.can_write,
        node=identity.is_node,
    )


async def verify(verifier: TokenVerifier, token: str) -> Identity:
    """The token's identity; raises ``AuthFailed`` with the reason (for the log)."""
    if not token:
        raise AuthFailed("malformed Authorization header")
    try:
        return await verifier.verify(token)
    except Exception as exc:  # Unauthorized, and whatever else a verifier may raise
        raise AuthFailed(f"token refused: {exc}") from None


async def first_message_auth(transport: WebSocketTransport, deps: ViewerDeps) -> Identity:
    """Waits (bounded) for a first message ``auth {token}`` and verifies it."""
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
        identity = await verify(deps.verifier, args.token)
        transport.offer(m.encode_result(msg.id, {"subject": identity.subject}))
        return identity
    raise AuthFailed(f"no auth message within {deps.auth_timeout_s:g}s")


async def close_when_expired(
    transport: WebSocketTransport, deadline: float, deps: ViewerDeps, name: str
) -> None:
    """Closes the viewer with 4001 once ``deadline`` (Unix seconds) has passed."""
    left = deadline - deps.clock()
    while left > 0:
        await anyio.sleep(left)
        left = deadline - deps.clock()  # again: the wall clock may have been set back
    if not transport.closing:
        log.info("%s: its token expired; closing it (4001)", name)
        deps.on_expired()
        transport.request_close(CLOSE_UNAUTHORIZED, EXPIRED_REASON)


async def serve_viewer(
    transport: WebSocketTransport,
    deps: ViewerDeps,
    name: str,
    identity: Identity | None,
) -> None:
    """Runs one viewer to its end (the websocket handler's body).

    ``identity`` is the one the upgrade's bearer token gave, or None: then the viewer must
    authenticate with its first message.
    """
    async with anyio.create_task_group() as tg:
        tg.start_soon(transport.run_writer)
        if identity is None:
            try:
                identity = await first_message_auth(transport, deps)
            except AuthFailed as exc:
                deps.on_auth_failure(name, str(exc))
                transport.request_close(CLOSE_UNAUTHORIZED, "unauthorized")
                return  # the writer closes the socket; the group waits for it
            deps.on_authenticated()
        log.info("%s: authenticated as %s", name, identity.subject)
        tg.start_soon(
            close_when_expired, transport, identity.expires_at + deps.verifier.leeway_s, deps, name
        )
        methods = ViewerMethods(
            ViewerContext(
                name=name,
                identity=identity,
                grant=grant_of(identity),
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
