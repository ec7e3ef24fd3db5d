"""Slow clients against the control plane's HTTP server, with real sockets on loopback: a
client that dribbles its request head is closed at the head deadline, however often it
sends a byte; past the connection cap the longest-waiting slow client makes room; a normal
request is served throughout. Bounded in count and time: every wait has a fail-safe limit
far above what it takes, and nothing asserts how fast anything happened."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from control_plane.app import create_app, serve_control_plane
from control_plane.settings import ControlPlaneSettings

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PARTIAL_HEAD = b"GET /health HTTP/1.1\r\nHost: cp\r\nX-Slow: "
FAIL_SAFE_S = 30  # a bound on the test, not a measurement
CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError)


def _settings(tmp_path: Path, **over: object) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        state_dir=tmp_path / "cp-state",
        public_url="http://127.0.0.1:1",
        database_url=f"sqlite:///{tmp_path / 'cp.db'}",
        **over,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def served(settings: ControlPlaneSettings) -> AsyncIterator[tuple[str, int, str]]:
    async with serve_control_plane(settings) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port), url


async def _closed_by_server(stream: SocketStream) -> bool:
    """True once the server has closed the connection; reads (and drops) what it sends."""
    try:
        with anyio.move_on_after(0.05):
            await stream.receive()
    except CLOSED:
        return True
    return False


async def dribble(host: str, port: int, closed: list[int], i: int, *, prime: bool) -> None:
    """Sends a request head one byte at a time (after a whole request, if `prime`) until
    the server closes the connection."""
    async with await anyio.connect_tcp(host, port) as stream:
        if prime:  # a keep-alive connection: the deadline restarts after each response
            await stream.send(b"GET /health HTTP/1.1\r\nHost: cp\r\n\r\n")
            got = b""
            while not got.endswith(b'{"ok":true}'):
                got += await stream.receive()
        await stream.send(PARTIAL_HEAD)
        while not await _closed_by_server(stream):
            try:
                await stream.send(b"x")
            except CLOSED:
                break
        closed.append(i)


async def test_a_dribbled_request_head_is_closed_at_the_deadline(tmp_path: Path) -> None:
    settings = _settings(tmp_path, header_timeout_s=0.5)
    closed: list[int] = []
    async with served(settings) as (host, port, url):
        with anyio.fail_after(FAIL_SAFE_S):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(
                        functools.partial(dribble, prime=i % 2 == 1), host, port, closed, i
                    )
                # Meanwhile a normal client is served.
                async with httpx.AsyncClient(base_url=url) as client:
                    assert (await client.get("/health")).json() == {"ok": True}
        # Every slow connection was closed by the server (else fail_after fires).
        assert sorted(closed) == list(range(10))


async def test_past_the_cap_the_longest_waiting_slow_client_makes_room(
    tmp_path: Path,
) -> None:
    # A head deadline far beyond the test: only the cap can close anything here.
    settings = _settings(tmp_path, header_timeout_s=600, max_connections=4)
    async with served(settings) as (host, port, url):
        slow = []
        for _ in range(4):
            stream = await anyio.connect_tcp(host, port)
            await stream.send(PARTIAL_HEAD)
            slow.append(stream)
        try:
            with anyio.fail_after(FAIL_SAFE_S):
                async with httpx.AsyncClient(base_url=url) as client:
                    assert (await client.get("/health")).json() == {"ok": True}
                # The oldest slow connection was closed to make room ...
                while not await _closed_by_server(slow[0]):
                    pass
            # ... and only that one.
            for stream in slow[1:]:
                assert not await _closed_by_server(stream)
        finally:
            for stream in slow:
                await stream.aclose()


async def test_a_dribbled_body_is_a_408_and_the_connection_closes(tmp_path: Path) -> None:
    """Past the head, the body has its own deadline (the head's is over by then)."""
    settings = _settings(tmp_path, header_timeout_s=600, body_timeout_s=0.5)
    app = create_app(settings)
    admin = app.state.plane.tokens.mint_user_token("admin", admin=True)
    head = (
        b"POST /api/keys/rotate HTTP/1.1\r\nHost: cp\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\nAuthorization: Bearer " + admin.encode() + b"\r\n\r\n{"
    )
    got = b""
    async with serve_control_plane(settings, app=app) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with anyio.fail_after(FAIL_SAFE_S):
            async with await anyio.connect_tcp(host, int(port)) as stream:
                await stream.send(head)
                while True:
                    try:
                        with anyio.move_on_after(0.05):
                            got += await stream.receive()
                            continue
                        await stream.send(b" ")  # one more body byte
                    except CLOSED:
                        break
    app.state.plane.close()
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b"body not received within 0.5 s" in got
