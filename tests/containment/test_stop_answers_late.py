"""``session/stop`` answers once the session's processes are gone (issue 28, item 16).

A descendant that called ``setsid`` used to be alive for 0.1 to 1.5 s after the answer. Each
check here is made at once after the stop returns: no waiting, no polling.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.containment.harness import alive, contained, hostile_spec
from tests.containment.pool import TestPool, require_cgroup_v2, require_root
from vm_agent.process.procgroup import group_members

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_after_the_stop_no_process_of_the_session_is_alive(
    agent_pool: TestPool, tmp_path: Path
) -> None:
    require_root()
    require_cgroup_v2()
    async with contained(agent_pool, tmp_path, [hostile_spec()]) as c:
        session = await c.ready("hostile", c.workspace("stop-at-once"), owner="erin")
        [daemonized] = await c.attack(session, [{"setsid": True}])
        pid = int(daemonized["detail"])
        agent = session.agent_pid
        assert agent is not None and alive(pid) and alive(agent)
        assert session.containment is not None and session.containment.cgroup is not None
        cgroup = session.containment.cgroup
        assert cgroup.populated()
        await session.stop_and_wait()
        # At once: the setsid'd descendant, the agent, and the whole cgroup.
        assert not alive(pid), f"setsid descendant {pid} outlived the stop's answer"
        assert not alive(agent)
        assert not cgroup.populated()


async def test_without_cgroups_the_stop_answers_once_the_process_group_is_gone(
    agent_pool: TestPool, tmp_path: Path
) -> None:
    require_root()
    async with contained(agent_pool, tmp_path, [hostile_spec()], cgroups=False) as c:
        session = await c.ready("hostile", c.workspace("stop-pgroup"), owner="erin")
        agent = session.agent_pid
        assert agent is not None and group_members(agent) == [agent]
        [daemonized] = await c.attack(session, [{"setsid": True}])
        pid = int(daemonized["detail"])
        try:
            await session.stop_and_wait()
            assert group_members(agent) == [] and not alive(agent)
            assert alive(pid)  # the fallback's known limit: it left the group (said at start)
        finally:
            os.kill(pid, signal.SIGKILL)
