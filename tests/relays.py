"""A relay of the tests' own that can cut its connections, like a network failure.

Each connection its listener accepts is piped to a TCP port on loopback; ``cut`` drops
every live one abruptly (no close frame). The caller chooses the listener: TCP for a viewer
on this machine, a Unix socket for a client inside a namespace's forward.
"""

from __future__ import annotations

import contextlib

import anyio
from anyio.abc import ByteStream, Listener

_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class CuttingRelay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.scopes: set[anyio.CancelScope] = set()
        self.connections = 0

    async def relay(self, listener: Listener[ByteStream]) -> None:
        """Serves ``listener`` (and closes it) until cancelled."""
        async with listener:
            await listener.serve(self._handle)

    def cut(self) -> None:
        for scope in list(self.scopes):
            scope.cancel()

    async def _handle(self, client: ByteStream) -> None:
        self.connections += 1
        with anyio.CancelScope() as scope, contextlib.suppress(*_GONE):
            self.scopes.add(scope)
            try:
                async with (
                    client,
                    await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream,
                    anyio.create_task_group() as tg,
                ):
                    tg.start_soon(_pipe, client, upstream, tg.cancel_scope)
                    tg.start_soon(_pipe, upstream, client, tg.cancel_scope)
            finally:
                self.scopes.discard(scope)


async def _pipe(src: ByteStream, dst: ByteStream, done: anyio.CancelScope) -> None:
    with contextlib.suppress(*_GONE):
        async for chunk in src:
            await dst.send(chunk)
    done.cancel()
