"""Bad input never crashes the daemon, and other viewers are untouched."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server.harness import Client, Daemon, daemon, settled_head, text

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def _still_served(d: Daemon, bystander: Client, session_id: str) -> None:
    """The bystander still gets answers and live events; a new viewer can still connect."""
    before = len(bystander.events)
    outcome = await bystander.call(
        "session/prompt",
        {"session_id": session_id, "prompt": text("still here"), "prompt_id": f"p{before}"},
    )
    assert outcome["outcome"] == "completed"
    head = await settled_head(d, session_id)
    await bystander.events_until(head)
    assert bystander.seqs() == list(range(1, head + 1))
    async with d.viewer() as fresh:
        assert len((await fresh.call("session/list"))["sessions"]) == 1


async def test_malformed_json_and_invalid_requests_get_error_answers(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer() as bystander, d.viewer() as v:
        await d.start(bystander, "echo", session_id="s1")
        await bystander.call("session/subscribe", {"session_id": "s1"})
        await v.ws.send("{this is not json")
        answer = await v.recv()
        assert answer["id"] is None and answer["error"]["code"] == -32700
        for frame, code in [
            ("[1, 2, 3]", -32600),
            ('"a string"', -32600),
            ('{"id": 5, "method": "session/list"}', -32600),  # no "jsonrpc": "2.0"
            ('{"jsonrpc": "2.0", "id": 6, "method": 42}', -32600),
            ('{"jsonrpc": "2.0", "id": 7, "method": "session/list", "params": 3}', -32600),
            ('{"jsonrpc": "2.0", "id": 8, "method": "nope/nope"}', -32601),
            ('{"jsonrpc": "2.0", "id": 9, "method": "session/subscribe", "params": {}}', -32602),
        ]:
            await v.ws.send(frame)
            answer = await v.recv()
            assert answer["error"]["code"] == code, (frame, answer)
        # A notification (no id) is never answered; the connection stays fine.
        await v.send({"jsonrpc": "2.0", "method": "session/list"})
        assert await v.call("session/list") == {"sessions": [d.supervisor.get("s1").describe()]}
        await _still_served(d, bystander, "s1")


async def test_a_binary_frame_closes_1003(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer() as bystander:
        await d.start(bystander, "echo", session_id="s1")
        await bystander.call("session/subscribe", {"session_id": "s1"})
        async with d.viewer() as v:
            await v.ws.send(b'{"jsonrpc": "2.0", "id": 1, "method": "session/list"}')
            with pytest.raises(ConnectionClosed) as closed:
                await v.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        await _still_served(d, bystander, "s1")


async def test_an_oversize_frame_closes_1009(tmp_path: Path) -> None:
    async with daemon(tmp_path, max_frame_bytes=64 * 1024) as d, d.viewer() as bystander:
        await d.start(bystander, "echo", session_id="s1")
        await bystander.call("session/subscribe", {"session_id": "s1"})
        async with d.viewer() as v:
            huge = {"session_id": "s1", "prompt": text("x" * 100_000), "prompt_id": "big"}
            with pytest.raises(ConnectionClosed) as closed:
                await v.call("session/prompt", huge)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        with anyio.fail_after(10):
            while d.server.viewer_count != 1:
                await anyio.sleep(0.01)
        await _still_served(d, bystander, "s1")
        events = await d.log.read("s1", 0, 1000)
        assert "big" not in [e.data.get("prompt_id") for e in events]


async def test_a_viewer_that_vanishes_mid_request_breaks_nothing(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer() as bystander:
        await d.start(bystander, "echo", session_id="s1")
        await bystander.call("session/subscribe", {"session_id": "s1"})
        for _ in range(5):
            async with d.viewer() as v:
                await v.send(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "session/subscribe",
                        "params": {"session_id": "s1"},
                    }
                )
                await v.send({"jsonrpc": "2.0", "id": 2, "method": "session/list"})
                v.ws.transport.abort()  # gone without a close handshake
        await _still_served(d, bystander, "s1")
        with anyio.fail_after(10):
            while d.server.viewer_count != 1:
                await anyio.sleep(0.01)
        assert d.server.fanout.subscriber_count("s1") == 1
