"""Resume past retention, and the daemon's shutdown of its viewers."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.abc
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.server.harness import RpcError, daemon, fake, settled_head, text
from vm_agent.server import ViewerServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_resuming_from_dropped_events_names_the_first_available_seq(tmp_path: Path) -> None:
    agent = fake("flood", "--count", "300", "--size", "200")
    async with daemon(tmp_path, [agent], retention_bytes=16 * 1024) as d, d.viewer() as v:
        await d.start(v, "flood", session_id="s1")
        prompt = {"session_id": "s1", "prompt": text("go"), "prompt_id": "p"}
        assert (await v.call("session/prompt", prompt))["outcome"] == "completed"
        head = await settled_head(d, "s1")
        with pytest.raises(RpcError) as err:
            await v.call("session/subscribe", {"session_id": "s1", "after_seq": 0})
        assert err.value.code == -32004
        assert isinstance(err.value.data, dict)
        first = err.value.data["first_available_seq"]
        assert 1 < first <= head
        assert f"first available seq is {first}" in err.value.message
        # Resuming from what is left works.
        await v.call("session/subscribe", {"session_id": "s1", "after_seq": first - 1})
        await v.events_until(head)
        assert v.seqs() == list(range(first, head + 1))


async def test_stop_accepting_then_close_viewers(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        async with d.viewer() as a, d.viewer(d.token("read")) as b:
            await d.start(a, "echo", session_id="s1")
            await b.call("session/subscribe", {"session_id": "s1"})
            assert d.server.viewer_count == 2
            d.server.stop_accepting()
            with pytest.raises((OSError, InvalidStatus)):
                async with connect(d.url):
                    pass
            await d.server.close_viewers()
            assert d.server.viewer_count == 0
            for client in (a, b):
                with pytest.raises(ConnectionClosed) as closed:
                    await client.call("session/list")
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                    1001,
                    "daemon shutting down",
                )
        # Closing the viewers never stopped the session.
        assert d.supervisor.get("s1").state.value == "ready"


async def test_cancelling_serve_closes_viewers_with_1001(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        server = ViewerServer(
            settings=d.server.settings,
            supervisor=d.supervisor,
            log=d.log,
            verifier=d.server.verifier,
        )
        serving = anyio.CancelScope()

        async def run(*, task_status: anyio.abc.TaskStatus[int]) -> None:
            with serving:
                await server.serve("127.0.0.1", 0, task_status=task_status)

        async with anyio.create_task_group() as tg:
            port = await tg.start(run)
            url = f"ws://127.0.0.1:{port}/v1/ws"
            headers = {"Authorization": f"Bearer {d.token()}"}
            async with connect(url, additional_headers=headers) as ws:
                await ws.send('{"jsonrpc": "2.0", "id": 1, "method": "session/list"}')
                assert "sessions" in await ws.recv()
                serving.cancel()
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
        assert server.viewer_count == 0
