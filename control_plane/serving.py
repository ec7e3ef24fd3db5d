"""Serving an ASGI app with uvicorn inside the caller's anyio task group.

uvicorn's own signal handlers are off (the caller owns shutdown), and it has no startup
event to wait on, so the start is polled; leaving the block asks the server to exit.
`guarded_h11` is the HTTP protocol with a request-head deadline and a connection cap;
`uvicorn_log_config` writes uvicorn's own lines in the daemon's console format, which
keeps each on one line (a traceback's lines marked), whatever a request put in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator, Sequence
from typing import Any

import anyio
import h11  # uvicorn's own dependency for its h11 protocol (and httpx's, on the VM too)
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from vm_agent.runtime.logs import ConsoleFormatter


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


def guarded_h11(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with what it lacks against slow clients.

    uvicorn times a connection out only while it idles after a response, and the first
    byte of a request stops that clock, so a client sending a header byte every few
    seconds keeps its socket forever (and counts against `limit_concurrency`, which then
    turns everyone else away). Here a connection must send a whole request head within
    `header_timeout_s` of its accept or of its last response, however it dribbles; and
    past `max_connections` a new connection makes room by closing the one that has waited
    longest for its head (a slow client's, almost always), or is itself closed when none
    is waiting. One class per server: `waiting` is that server's.
    """
    waiting: dict[H11Protocol, None] = {}  # awaiting a request head, oldest first

    class GuardedH11Protocol(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # Closed ones stay in `connections` until the loop reports them lost.
            live = sum(1 for c in self.connections if not c.transport.is_closing())
            if live > max_connections:
                oldest = next(iter(waiting), None)
                if not isinstance(oldest, GuardedH11Protocol):
                    transport.close()  # every connection is in a request: refuse this one
                    return
                oldest.expire_head()
            self._await_head()

        def _await_head(self) -> None:
            self._head_done()
            waiting[self] = None
            self._head_deadline = self.loop.call_later(header_timeout_s, self.expire_head)

        def _head_done(self) -> None:
            waiting.pop(self, None)
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def expire_head(self) -> None:
            self._head_done()
            if not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self in waiting and self.conn.their_state not in (h11.IDLE, h11.ERROR):
                self._head_done()  # the head is in: the request's own time is the app's

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Keep-alive: the next head has the same time (unless it came pipelined).
            if not self.transport.is_closing() and self.conn.their_state in (
                h11.IDLE,
                h11.DONE,
            ):
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_done()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's loggers (and only theirs: the root logger is the process's) through the
    escaping console formatter, to stderr."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "console",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"console": {"()": ConsoleFormatter}},
        "handlers": {"uvicorn": handler},
        "loggers": {
            name: {"handlers": ["uvicorn"], "level": "INFO", "propagate": False}
            for name in ("uvicorn", "uvicorn.access")
        },
    }
