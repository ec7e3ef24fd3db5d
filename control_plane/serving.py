"""Serving an ASGI app with uvicorn inside the caller's anyio task group.

uvicorn's own signal handlers are off (the caller owns shutdown), and it has no startup
event to wait on, so the start is polled; leaving the block asks the server to exit.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Generator, Sequence

import anyio
import uvicorn


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        yield


@contextlib.asynccontextmanager
async def uvicorn_serving(
    config: uvicorn.Config, sockets: Sequence[socket.socket], what: str
) -> AsyncIterator[None]:
    """Serves on ``sockets`` until the block exits; ``what`` names the server in errors."""
    server = _QuietServer(config)
    async with anyio.create_task_group() as tg:
        finished = anyio.Event()

        async def run() -> None:
            try:
                await server.serve(sockets=list(sockets))
            finally:
                finished.set()

        tg.start_soon(run)
        while not server.started:
            if finished.is_set():
                raise RuntimeError(f"{what} stopped during startup")
            await anyio.sleep(0.01)
        try:
            yield
        finally:
            server.should_exit = True
