"""The gateway's task tree: the daemon link and the client's stdio connection.

It ends, with exit status 0, when the client closes stdin; prompts still running on the
daemon go on there (they belong to the daemon, and ``session/load`` shows them later).
"""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace

import anyio

from vm_agent.gateway.agent import Gateway, Options
from vm_agent.gateway.control_plane import ControlPlaneUnreachable, fetch_connection, tls_context
from vm_agent.gateway.link import DaemonLink, LinkFailed
from vm_agent.gateway.stdio import FdReceiveStream, FdSendStream
from vm_agent.jsonrpc.connection import Connection
from vm_agent.jsonrpc.transport import LineTransport

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1


async def serve(
    options: Options,
    *,
    url: str,
    token: str,
    tls: ssl.SSLContext | None,
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    renew: Callable[[], Awaitable[str]] | None = None,
    server_hostname: str | None = None,
) -> int:
    gateway = Gateway(options)
    link = DaemonLink(
        url,
        token,
        tls,
        gateway.on_event,
        gateway.resume_points,
        renew=renew,
        server_hostname=server_hostname,
    )
    transport = LineTransport(FdSendStream(stdout_fd), FdReceiveStream(stdin_fd))
    # Malformed lines from the client are answered (-32700/-32600), as ACP expects.
    client = Connection(transport, gateway.router(), name="client", answer_invalid=True)
    gateway.client, gateway.link = client, link
    async with anyio.create_task_group() as tg:
        gateway.tg = tg
        try:
            await tg.start(link.run)
        except LinkFailed as exc:
            print(f"vm-agent acp: {exc}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        await client.run()  # until the client closes stdin
        log.info("the client closed stdin; leaving")
        tg.cancel_scope.cancel()
    return EXIT_OK


async def serve_task(options: Options, *, control_plane: str, user_token: str, task: str) -> int:
    """``--task``: the control plane says where the task's session is (and gives a viewer
    token, renewed through it when the daemon closes the connection for expiry); then as
    ``--session`` that session."""

    async def renew() -> str:
        return (await fetch_connection(control_plane, user_token, task)).token

    try:
        found = await fetch_connection(control_plane, user_token, task)
        tls = tls_context(found)
    except (LinkFailed, ControlPlaneUnreachable) as exc:
        print(f"vm-agent acp: task {task}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    log.info("task %s: session %s at %s", task, found.session_id, found.viewer_url)
    return await serve(
        replace(options, session=found.session_id),
        url=found.viewer_url,
        token=found.token,
        tls=tls,
        renew=renew,
        server_hostname=found.tls_name,
    )
