"""Fan-out: resume without gaps, many viewers, a slow viewer closed while the others finish."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.server.harness import (
    Client,
    Daemon,
    daemon,
    fake,
    metric_value,
    prompt_request,
    settled_head,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def _prompt_and_wait(d: Daemon, session_id: str, words: str, prompt_id: str) -> int:
    async with d.viewer() as w:
        answer = await w.call(
            "session/prompt",
            prompt_request("x", session_id, words, prompt_id)["params"],
        )
        assert answer["outcome"] == "completed", answer
    return await settled_head(d, session_id)


async def test_resume_after_a_disconnect_has_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    agent = fake("slow", "--chunks", "60", "--delay-ms", "5")
    async with daemon(tmp_path, [agent]) as d:
        async with d.viewer() as w:
            await d.start(w, "slow", session_id="s1")
            async with d.viewer(d.token("read")) as v:
                await v.call("session/subscribe", {"session_id": "s1", "after_seq": 2})
                await w.send(prompt_request("p", "s1", " ".join(["w"] * 60), "p1"))
                await v.events_until(20)  # mid-stream
                first = list(v.events)
            head = (await w.answer("p"))["result"] and await settled_head(d, "s1")
        assert first[0]["seq"] == 3
        last_seen = first[-1]["seq"]
        assert last_seen < head
        async with d.viewer(d.token("read")) as v:
            result = await v.call("session/subscribe", {"session_id": "s1", "after_seq": last_seen})
            assert result["head_seq"] == head
            await v.events_until(head)
            second = list(v.events)
        seqs = [e["seq"] for e in first + second]
        assert seqs == list(range(3, head + 1))
        stored = await d.log.read("s1", 2, 10_000)
        assert [e.params() for e in stored] == first + second


@pytest.mark.slow
async def test_fifty_viewers_get_the_same_complete_sequence(tmp_path: Path) -> None:
    agent = fake("flood", "--count", "400", "--size", "60")
    async with daemon(tmp_path, [agent]) as d:
        async with d.viewer() as w:
            await d.start(w, "flood", session_id="s1")
        received: dict[int, list[dict[str, Any]]] = {}
        head_holder: list[int] = []
        all_subscribed = anyio.Event()
        done = anyio.Event()

        async def watch(index: int, ready: list[int]) -> None:
            async with d.viewer(d.token("read")) as v:
                await v.call("session/subscribe", {"session_id": "s1"})
                ready.append(index)
                if len(ready) == 25:
                    all_subscribed.set()
                await done.wait()
                await v.events_until(head_holder[0])
                received[index] = v.events

        async def prompt() -> None:
            await all_subscribed.wait()
            head_holder.append(await _prompt_and_wait(d, "s1", "go", "p1"))
            done.set()

        early: list[int] = []
        late: list[int] = []
        async with anyio.create_task_group() as tg:
            for i in range(25):
                tg.start_soon(watch, i, early)
            tg.start_soon(prompt)
            await all_subscribed.wait()
            # The other half joins while the flood runs: replay, then live.
            for i in range(25, 50):
                tg.start_soon(watch, i, late)
        head = head_holder[0]
        assert head > 400
        expected = [e.params() for e in await d.log.read("s1", 0, 10_000)]
        assert len(received) == 50
        for index, events in received.items():
            assert events == expected, f"viewer {index}"


def _tiny_window_socket(port: int) -> socket.socket:
    # A viewer that stops reading: a small receive buffer makes the daemon's side fill fast.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


@pytest.mark.slow
async def test_a_viewer_that_stops_reading_is_closed_while_the_others_finish(
    tmp_path: Path,
) -> None:
    # The flood comes in rounds of 2,000 updates; the readers catch up after each, so they
    # are never more than a round (half the queue) behind whatever the machine's load, while
    # the one that does not read falls behind by every round and passes the queue (and what the
    # sockets buffer, about 700 updates here) in the third or fourth.
    agent = fake("flood", "--count", "2000", "--size", "300")
    async with daemon(tmp_path, [agent], queue_limit=4000) as d:
        async with d.viewer() as w:
            await d.start(w, "flood", session_id="s1")
        port = int(d.url.rsplit(":", 1)[1].split("/")[0])
        headers = {"Authorization": f"Bearer {d.token('read')}"}
        async with (
            connect(
                d.url,
                sock=_tiny_window_socket(port),
                additional_headers=headers,
                max_queue=4,
                max_size=None,
            ) as slow_ws,
            d.viewer(d.token("read")) as fast1,
            d.viewer(d.token("read")) as fast2,
        ):
            slow = Client(slow_ws)
            for v in (slow, fast1, fast2):
                await v.call("session/subscribe", {"session_id": "s1"})

            async def keep_reading(v: Client) -> None:
                # Reads while the round runs, as a real viewer does (websockets' recv may be
                # cancelled without losing a message).
                while True:
                    await v.events_until(v.events[-1]["seq"] + 1 if v.events else 1)

            head = 0
            for round_ in range(4):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(keep_reading, fast1)
                    tg.start_soon(keep_reading, fast2)
                    head = await _prompt_and_wait(d, "s1", "go", f"p{round_}")
                    tg.cancel_scope.cancel()
                for v in (fast1, fast2):
                    await v.events_until(head)
                    assert v.seqs() == list(range(1, head + 1))
            assert head > 4 * 2000
            with pytest.raises(ConnectionClosed) as closed:
                await slow.events_until(head)
            rcvd = closed.value.rcvd
            assert rcvd is not None
            assert (rcvd.code, rcvd.reason) == (4008, "viewer too slow: resume with after_seq")
            got = slow.seqs()
            assert got == list(range(1, len(got) + 1))
            assert len(got) < head
        assert metric_value(d.metrics, "vm_agent_viewer_overflows_total") == 1
        # It resumes from its last seq and gets the rest.
        async with d.viewer(d.token("read")) as again:
            await again.call("session/subscribe", {"session_id": "s1", "after_seq": len(got)})
            await again.events_until(head)
            assert again.seqs() == list(range(len(got) + 1, head + 1))
        assert d.supervisor.get("s1").state.value == "ready"


async def test_a_batch_viewer_gets_the_same_sequence_in_fewer_frames(tmp_path: Path) -> None:
    agent = fake("flood", "--count", "1500", "--size", "60")
    async with daemon(tmp_path, [agent]) as d:
        async with d.viewer() as w:
            await d.start(w, "flood", session_id="s1")
        # One viewer watches live while the flood runs; a late one replays it all.
        async with d.viewer(d.token("read"), batch=True) as live:
            await live.call("session/subscribe", {"session_id": "s1"})
            head = await _prompt_and_wait(d, "s1", "go", "p1")
            await live.events_until(head)
        async with d.viewer(d.token("read"), batch=True) as late:
            await late.call("session/subscribe", {"session_id": "s1"})
            await late.events_until(head)
            # Answers come through the same queue: one that follows a batch still arrives.
            listed = await late.call("session/list")
        expected = [e.params() for e in await d.log.read("s1", 0, 10_000)]
        assert live.events == expected
        assert late.events == expected
        assert [s["session_id"] for s in listed["sessions"]] == ["s1"]
        # A replay queues a page at once, so it is always sent as batches.
        assert late.batches >= 1
        assert late.batches < head / 2
        # Each message is counted once, whatever the frame that carried it.
        sent = metric_value(
            d.metrics, "vm_agent_jsonrpc_messages_total", peer="viewer", direction="out"
        )
        assert sent >= 2 * head


async def test_an_unknown_batch_value_is_refused_at_the_upgrade(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(d.url + "?batch=maybe"):
                pass
        assert refused.value.response.status_code == 400
        assert b"batch must be" in refused.value.response.body
