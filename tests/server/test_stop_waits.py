"""``session/stop`` answers once the agent's process group is gone (issue 28, item 16),
also while the agent is still starting. Checked at once after the answer, with no wait."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.containment.harness import alive
from tests.server.harness import daemon, fake
from vm_agent.process.procgroup import group_members

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_the_viewers_stop_answers_after_the_agent_is_gone(tmp_path: Path) -> None:
    # Over the port, with no containment (process groups, as in dev without root).
    async with daemon(tmp_path) as d, d.viewer() as viewer:
        started = await viewer.call("session/start", {"agent": "echo", "cwd": str(d.workdir)})
        pid = d.supervisor.get(started["session_id"]).agent_pid
        assert pid is not None and group_members(pid) == [pid]
        await viewer.call("session/stop", {"session_id": started["session_id"]})
        assert group_members(pid) == [] and not alive(pid)


async def test_a_stop_during_the_start_does_not_wait_for_the_start(tmp_path: Path) -> None:
    # The agent never answers session/new: the stop must not sit out the start deadline
    # (20 s here) and answer with the agent still running.
    hangs = fake("echo", "--hang-on", "session/new", name="hangs")
    async with daemon(tmp_path, [hangs]) as d:
        session = await d.supervisor.start_session("hangs", d.workdir)
        assert session.state.value == "starting"
        with anyio.fail_after(20):
            while session.agent_pid is None:  # spawned by the session's own task
                await anyio.sleep(0.01)
        pid = session.agent_pid
        await session.stop_and_wait()
        assert group_members(pid) == [] and not alive(pid)
        assert session.state.value == "stopped"
