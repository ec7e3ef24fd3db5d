"""Faults a user would fear: the node stops reporting mid-task (the task ends after the
deadline, with the reason), the node's connection drops mid-prompt (the task still ends
once, from the outbox), a step the node refuses."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest
from sqlalchemy import select

from control_plane.storage.db import task_prompts, tasks
from tests.dispatch.harness import FAST, stack

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_node_that_stops_reporting_ends_its_task_after_the_deadline(
    tmp_path: Path,
) -> None:
    silent = FAST.model_copy(update={"node_silent_after_s": 3.0})
    async with stack(tmp_path, dispatch=silent) as s:
        await s.submit(taskId="t1", agent="fake-slow", prompt="long one")
        await s.eventually("t1", lambda t: t["timings"]["firstUpdateAt"] is not None)
        s.daemon.send_signal(signal.SIGKILL)  # no heartbeats, no events, no answer
        await s.daemon.wait()
        done = await s.until("t1", "timed_out", "completed", "failed", "crashed")
        assert done["status"] == "timed_out", done
        assert done["outcome"]["kind"] == "node_silent"
        assert "node node-1 sent nothing for" in done["reason"]
        with s.plane.engine.connect() as conn:
            (state,) = conn.execute(select(task_prompts.c.state)).scalars()
        assert state == "sent"  # its outcome never came: the node is gone
        with anyio.fail_after(30):  # and the dispatcher stops trying to stop its session
            while True:
                with s.plane.engine.connect() as conn:
                    left = conn.execute(select(tasks.c.session_stopped_at)).scalar_one()
                if left is not None:
                    break
                await anyio.sleep(0.05)
