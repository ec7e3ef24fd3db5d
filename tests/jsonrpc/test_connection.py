"""The connection over real loopback sockets: ordering, limits, garbage, peer closing."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from tests.jsonrpc.conftest import tcp_pair
from vm_agent.jsonrpc.connection import Connection, PeerClosed, router
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.jsonrpc.transport import LineTransport

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


class RawPeer:
    """The far end, written by hand so the test does not trust our own encoder."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def read_message(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            self.buf += await self.stream.receive()
        raw, self.buf = self.buf.split(b"\n", 1)
        result: dict[str, Any] = json.loads(raw)
        return result


async def test_notifications_are_handled_in_arrival_order() -> None:
    seen: list[int] = []

    async def slow_for_some(params: Any) -> None:
        if params["n"] % 100 == 0:
            await anyio.sleep(0.001)  # an awaiting handler must not let later ones overtake
        seen.append(params["n"])

    def on_update(params: Any) -> Any:
        return slow_for_some(params)

    async with tcp_pair() as (ours, theirs):
        conn = Connection(
            LineTransport(ours, ours), router(notifications={"u": on_update}), name="t"
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)
            payload = b"".join(
                line({"jsonrpc": "2.0", "method": "u", "params": {"n": i}}) for i in range(5000)
            )
            await theirs.send(payload)
            await theirs.send_eof()
            with anyio.fail_after(10):
                await conn.closed.wait()
    assert seen == list(range(5000))


async def test_request_answer_error_and_unknown_method_between_two_peers() -> None:
    async def echo(params: Any) -> Any:
        return {"echo": params}

    async def fails(params: Any) -> Any:
        raise JsonRpcError(-32000, "Authentication required")

    async with tcp_pair() as (a, b):
        server = Connection(LineTransport(b, b), router({"echo": echo, "fails": fails}), name="srv")
        client = Connection(LineTransport(a, a), router(), name="cli")
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.run)
            tg.start_soon(client.run)
            assert await client.request("echo", {"x": [1, "é"]}) == {"echo": {"x": [1, "é"]}}
            with pytest.raises(JsonRpcError) as auth:
                await client.request("fails", {})
            assert auth.value.code == -32000
            with pytest.raises(JsonRpcError) as missing:
                await client.request("no/such", {})
            assert missing.value.code == -32601
            tg.cancel_scope.cancel()


async def test_a_waiting_request_handler_does_not_stall_notifications() -> None:
    gate = anyio.Event()
    seen: list[int] = []

    async def wait_for_gate(params: Any) -> Any:
        await gate.wait()
        return {"ok": True}

    def on_update(params: Any) -> None:
        seen.append(params["n"])
        if params["n"] == 2:
            gate.set()

    async with tcp_pair() as (ours, theirs):
        conn = Connection(
            LineTransport(ours, ours),
            router({"ask": wait_for_gate}, {"u": on_update}),
            name="t",
        )
        peer = RawPeer(theirs)
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)
            await peer.send(line({"jsonrpc": "2.0", "id": 9, "method": "ask", "params": {}}))
            for n in (1, 2):
                await peer.send(line({"jsonrpc": "2.0", "method": "u", "params": {"n": n}}))
            with anyio.fail_after(5):
                answer = await peer.read_message()
            assert answer == {"jsonrpc": "2.0", "id": 9, "result": {"ok": True}}
            assert seen == [1, 2]
            tg.cancel_scope.cancel()


async def test_garbage_is_logged_and_skipped_without_an_answer() -> None:
    problems: list[str] = []
    seen: list[Any] = []
    async with tcp_pair() as (ours, theirs):
        conn = Connection(
            LineTransport(ours, ours),
            router(notifications={"u": seen.append}),
            name="agent",
            on_protocol_error=problems.append,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)
            await theirs.send(b'Welcome to your shell profile!\n{broken\n[1,2]\n"s"\n')
            await theirs.send(line({"jsonrpc": "2.0", "method": "u", "params": {"ok": 1}}))
            await theirs.send_eof()
            with anyio.fail_after(5):
                await conn.closed.wait()
            # Nothing was written back to the agent for its noise: once our side closes,
            # everything the agent can still read is all we ever sent it.
            await conn.aclose()
            sent_back = b""
            with anyio.fail_after(5):
                try:
                    while True:
                        sent_back += await theirs.receive()
                except anyio.EndOfStream:
                    pass
            assert sent_back == b"", sent_back
    assert seen == [{"ok": 1}]
    assert len(problems) == 4
    assert conn.stats.invalid_frames == 4
    assert "Welcome" in problems[0]


async def test_viewer_mode_answers_garbage_with_a_parse_error() -> None:
    async with tcp_pair() as (ours, theirs):
        conn = Connection(LineTransport(ours, ours), router(), name="viewer", answer_invalid=True)
        peer = RawPeer(theirs)
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)
            await peer.send(b"{nope\n")
            with anyio.fail_after(5):
                err = await peer.read_message()
            assert err["id"] is None
            assert err["error"]["code"] == -32700
            await peer.send(b'{"jsonrpc":"2.0","id":5}\n')
            with anyio.fail_after(5):
                err = await peer.read_message()
            assert (err["id"], err["error"]["code"]) == (5, -32600)
            tg.cancel_scope.cancel()


async def test_several_megabyte_lines_pass_and_oversize_is_reported_then_skipped() -> None:
    problems: list[str] = []
    sizes: list[int] = []
    async with tcp_pair() as (ours, theirs):
        conn = Connection(
            LineTransport(ours, ours),  # default limit: 16 MiB
            router(notifications={"u": lambda p: sizes.append(len(p["text"]))}),
            name="agent",
            on_protocol_error=problems.append,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)
            big = 6 * 1024 * 1024
            huge = 17 * 1024 * 1024
            await theirs.send(
                line({"jsonrpc": "2.0", "method": "u", "params": {"text": "a" * big}})
            )
            await theirs.send(
                line({"jsonrpc": "2.0", "method": "u", "params": {"text": "b" * huge}})
            )
            await theirs.send(line({"jsonrpc": "2.0", "method": "u", "params": {"text": "after"}}))
            await theirs.send_eof()
            with anyio.fail_after(20):
                await conn.closed.wait()
    assert sizes == [big, 5]
    assert conn.stats.oversize_frames == 1
    assert "over the 16777216-byte limit" in problems[0]


async def test_peer_closing_is_distinct_from_timeout_and_error() -> None:
    async with tcp_pair() as (ours, theirs):
        conn = Connection(LineTransport(ours, ours), router(), name="t")
        peer = RawPeer(theirs)
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)
            # our own deadline: TimeoutError, and the request is no longer in flight
            with pytest.raises(TimeoutError):
                with anyio.fail_after(0.2):
                    await conn.request("session/prompt", {})
            assert conn.in_flight() == []
            outcome: list[BaseException] = []

            async def ask() -> None:
                try:
                    await conn.request("session/prompt", {"n": 2})
                except PeerClosed as exc:
                    outcome.append(exc)

            tg.start_soon(ask)
            await peer.read_message()
            await peer.read_message()
            assert conn.in_flight() == ["session/prompt"]
            await theirs.aclose()
            with anyio.fail_after(5):
                await conn.closed.wait()
        assert len(outcome) == 1
        assert isinstance(outcome[0], PeerClosed)
        with pytest.raises(PeerClosed):
            await conn.request("anything", {})
