"""A flooding agent waits for the log: the reader is held once two chunks are uncommitted."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.abc import TaskGroup

from vm_agent.eventlog import EventLog
from vm_agent.session.traffic import CONFIRM_EVERY, UpdateRelay

pytestmark = pytest.mark.anyio

CHUNK = CONFIRM_EVERY
UPDATE = {"sessionId": "a", "update": {"sessionUpdate": "agent_message_chunk"}}


async def test_the_reader_waits_for_the_chunk_before_the_last(tmp_path: Path) -> None:
    async with EventLog.open(tmp_path / "events.sqlite3") as log:
        outputs: list[None] = []
        relay = UpdateRelay(log, "s1", lambda: outputs.append(None))
        stalled, stall = threading.Event(), threading.Event()

        def hold_the_writer() -> None:
            stalled.set()
            stall.wait()

        async with anyio.create_task_group() as tg:
            # The log's writer thread is busy: nothing commits until `stall` is set.
            tg.start_soon(log._thread.call, hold_the_writer)
            try:
                await anyio.to_thread.run_sync(stalled.wait)
                await _flood_while_stalled(relay, stall, tg)
            finally:
                stall.set()  # never leave the writer thread stuck, even on failure
        assert log.head_seq("s1") == 2 * CHUNK
        assert len(outputs) == 2 * CHUNK  # each one is new output for the session's deadline


async def _flood_while_stalled(relay: UpdateRelay, stall: threading.Event, tg: TaskGroup) -> None:
    holds: list[Any] = [relay(UPDATE) for _ in range(2 * CHUNK)]
    # The first chunk goes on unheld (it commits while the next one is read); at the end
    # of the second, the reader waits for the first chunk's commit.
    assert [i for i, held in enumerate(holds) if held is not None] == [2 * CHUNK - 1]
    released = anyio.Event()

    async def reader() -> None:
        await holds[-1]
        released.set()

    tg.start_soon(reader)
    await wait_all_tasks_blocked()  # the reader has run as far as it can
    assert not released.is_set(), "the reader went on while nothing was committed"
    stall.set()
    with anyio.fail_after(10):
        await released.wait()
