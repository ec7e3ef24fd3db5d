"""A task submitted to the control plane runs on a real daemon (the fake agent) and is
followed to its outcome: completed, a permission answered through the control plane, a
follow-up, a cancel, an agent without credentials (auth_required); events read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dispatch.harness import stack

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_task_runs_to_completed_and_its_events_read_back(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit(taskId="t1", agent="fake", prompt="hello there")
        done = await s.until("t1", "completed", "failed", "crashed", "timed_out")
        assert done["status"] == "completed", done
        assert done["outcome"]["kind"] == "completed"
        assert done["outcome"]["stopReason"] == "end_turn"
        # The outcome may come over the connection before the outbox brings the updates.
        done = await s.eventually("t1", lambda t: t["timings"]["firstUpdateAt"] is not None)
        timings = done["timings"]
        assert all(timings[k] for k in ("submittedAt", "nodeReadyAt", "endedAt"))
        assert [t["status"] for t in done["transitions"]] == [
            "queued", "waiting_for_node", "starting", "running", "completed",
        ]  # fmt: skip
        events = await s.events_until("t1", "prompt.finished")
        types = [e["type"] for e in events]
        assert "prompt.started" in types and "prompt.finished" in types
        started = next(e for e in events if e["type"] == "prompt.started")
        assert started["data"]["prompt"] == [{"type": "text", "text": "hello there"}]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs)
