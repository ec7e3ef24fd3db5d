"""Real loopback TCP stream pairs for exercising the connection over actual sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import anyio
from anyio.abc import SocketListener, SocketStream


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[SocketStream, SocketStream]]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    accepted: list[SocketStream] = []

    async def accept_one() -> None:
        stream = await cast(SocketListener, listener.listeners[0]).accept()
        accepted.append(stream)

    async with anyio.create_task_group() as tg:
        tg.start_soon(accept_one)
        client = await anyio.connect_tcp("127.0.0.1", port)
    await listener.aclose()
    server = accepted[0]
    try:
        yield client, server
    finally:
        await client.aclose()
        await server.aclose()
