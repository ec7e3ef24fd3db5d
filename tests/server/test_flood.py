"""Strangers flooding the viewer port: caps at accept, small frames before auth, 401s that
make no websocket, and every slot given back. Floods come from other loopback addresses
(127.0.0.2, ...), so the per-address caps are exercised as they would be on a network."""

from __future__ import annotations

import json
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tests.server.harness import Daemon, daemon, metric_value

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CAPS: dict[str, Any] = {
    "max_connections": 60,
    "max_connections_per_address": 30,
    "max_unauthenticated": 12,
    "max_unauthenticated_per_address": 4,
    "max_new_connections_per_address_per_s": 1e6,  # the rate has its own test
}


async def _open(d: Daemon, source: str, count: int, stack: AsyncExitStack) -> list[SocketStream]:
    streams = []
    for _ in range(count):
        stream = await anyio.connect_tcp("127.0.0.1", d.port, local_host=source)
        streams.append(await stack.enter_async_context(stream))
    return streams


def _closed_by_daemon(stream: SocketStream) -> bool:
    """Whether the daemon has closed this connection: its FIN (or RST) is here, without
    waiting (a connection still open has nothing to read: strangers are sent nothing)."""
    raw = stream.extra(SocketAttribute.raw_socket)
    with socket.fromfd(raw.fileno(), raw.family, raw.type) as sock:  # a dup, to peek with
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True


async def _closed(streams: list[SocketStream], count: int) -> list[bool]:
    """Which of `streams` the daemon closed, once `count` of them are (the metrics said
    how many it refused; their closes may still be on the way)."""
    await _wait_for(lambda: sum(map(_closed_by_daemon, streams)) >= count, "the closes")
    return [_closed_by_daemon(s) for s in streams]


async def _wait_for(condition: object, what: str) -> None:
    with anyio.fail_after(30, shield=False):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.02)


def _refused(d: Daemon, reason: str) -> float:
    return metric_value(d.metrics, "vm_agent_connections_refused_total", reason=reason)


async def test_unauthenticated_sockets_are_capped_per_address_and_in_all(tmp_path: Path) -> None:
    async with daemon(tmp_path, **CAPS) as d, AsyncExitStack() as stack:
        adm = d.server.admission
        # One address holds 20 silent sockets: 4 are let in, the rest closed at accept.
        flood = await _open(d, "127.0.0.2", 20, stack)
        await _wait_for(lambda: _refused(d, "address_unauthenticated") == 16, "refusals")
        assert adm.unauthenticated == 4
        closed = await _closed(flood, 16)
        assert closed.count(True) == 16
        # A real viewer from another address still gets in, and works.
        async with d.viewer() as v:
            assert await v.call("session/list") == {"sessions": []}
            # Two more addresses fill the unauthenticated pool (12). A newcomer is still let
            # in: the connection that has waited longest without a token makes room.
            held = [s for s, dropped in zip(flood, closed, strict=True) if not dropped]
            await _open(d, "127.0.0.3", 4, stack)
            await _open(d, "127.0.0.4", 4, stack)
            await _wait_for(lambda: adm.unauthenticated == 12, "the pool full")
            evicted = "vm_agent_connections_evicted_total"
            async with d.viewer() as newcomer:  # a real viewer's new handshake, meanwhile
                assert await newcomer.call("session/list") == {"sessions": []}
            assert metric_value(d.metrics, evicted) == 1
            assert (await _closed(held, 1)).count(True) == 1  # the oldest
            await _wait_for(lambda: adm.unauthenticated <= 12, "the pool within its cap")
            # The viewer already in is not touched by any of it.
            assert await v.call("session/list") == {"sessions": []}
        # Strangers that never speak are dropped by the handshake timeout; here we leave.
        await stack.aclose()
        await _wait_for(lambda: adm.total == 0, "every slot given back")
        assert (adm.unauthenticated, adm.addresses()) == (0, 0)
        async with d.viewer() as v:
            assert await v.call("session/list") == {"sessions": []}


async def test_the_total_and_per_address_caps_hold_authenticated_viewers_too(
    tmp_path: Path,
) -> None:
    caps = {**CAPS, "max_connections": 6, "max_connections_per_address": 4}
    async with daemon(tmp_path, **caps) as d, AsyncExitStack() as stack:
        viewers = [await stack.enter_async_context(d.viewer()) for _ in range(4)]
        assert d.server.admission.total == 4
        with pytest.raises((ConnectionClosed, OSError, InvalidHandshake)):
            async with d.viewer() as fifth:  # the same address: over its cap
                await fifth.call("session/list")
        assert _refused(d, "address") >= 1
        others = await _open(d, "127.0.0.9", 3, stack)  # two fit under the total of 6
        await _wait_for(lambda: _refused(d, "total") == 1, "the refusal")
        assert (await _closed(others, 1)).count(True) == 1
        assert _refused(d, "total") == 1
        for v in viewers:
            assert await v.call("session/list") == {"sessions": []}


async def test_fat_frames_before_auth_are_refused_without_being_read(tmp_path: Path) -> None:
    async with daemon(tmp_path, max_frame_bytes=4 * 1024 * 1024) as d:
        for size in (40 * 1024, 4 * 1024 * 1024):
            stranger = await connect(d.url, max_size=None)
            with pytest.raises(ConnectionClosed) as closed:
                await stranger.send("x" * size)  # the daemon may close before it all arrives
                await stranger.recv()
            sent = closed.value.rcvd
            assert sent is not None and sent.code == 1009  # "message too big"
            assert d.server.admission.total <= 1
        # Once authenticated by first message, the viewer gets the full frame size.
        async with d.viewer(bearer=False) as v:
            await v.request("auth", {"token": d.token()})
            big = {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "session/list",
                "params": {"x": "y" * 2**20},
            }
            await v.ws.send(json.dumps(big))
            answer = await v.answer(7)
            assert answer["error"]["code"] == -32602  # read and answered, not cut off
            assert await v.call("session/list") == {"sessions": []}
        # And so does a viewer with a token on the upgrade, from its first frame.
        async with d.viewer() as v:
            await v.ws.send(json.dumps(big))
            assert (await v.answer(7))["error"]["code"] == -32602


async def test_a_burst_of_bad_tokens_makes_no_websocket(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        statuses: list[int] = []

        async def forged(i: int) -> None:
            try:
                async with connect(d.url, additional_headers={"Authorization": f"Bearer x.{i}.z"}):
                    pass
            except InvalidStatus as exc:
                statuses.append(exc.response.status_code)

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(forged, i)
        assert statuses == [401] * 40
        assert next(d.server._viewer_ids) == 1  # no handler ever ran: no viewer was made
        assert metric_value(d.metrics, "vm_agent_ws_auth_failures_total") == 40
        await _wait_for(lambda: d.server.admission.total == 0, "slots given back")


async def test_an_address_that_redials_fast_is_refused_at_accept(tmp_path: Path) -> None:
    caps = {**CAPS, "max_new_connections_per_address_per_s": 2.0}
    async with daemon(tmp_path, **caps) as d, AsyncExitStack() as stack:
        # A burst of 4 (its unauthenticated cap), then 2 a second: a burst of 30 dials
        # within well under a second gets 4 or 5 in.
        streams = await _open(d, "127.0.0.7", 30, stack)
        await _wait_for(lambda: _refused(d, "rate") >= 20, "the refusals")
        closed = await _closed(streams, int(_refused(d, "rate")))
        assert closed[:4] == [False] * 4
        assert closed.count(False) <= 6
        assert _refused(d, "rate") >= 20
        # Another address is not held back by it.
        async with d.viewer() as v:
            assert await v.call("session/list") == {"sessions": []}
