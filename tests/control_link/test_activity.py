"""The heartbeat's `background` count from a session's real cgroup: every process in it and
beneath it but the agent's own (what an agent left running: a dev server in a terminal's
leaf, a child it forked in its own leaf), and nothing once the cgroup is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.containment.harness import gone
from tests.containment.pool import require_cgroup_v2, require_root
from vm_agent.containment.cgroups import CgroupTree
from vm_agent.containment.limits import Limits
from vm_agent.containment.session import SessionContainment
from vm_agent.control_link.activity import Activity, background_processes

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# An "agent" that forks a child left running (as `npm run dev &` from its shell tool would).
_AGENT_WITH_A_CHILD = (
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    time.sleep(600)\n"
    "print(os.getpid(), flush=True)\n"
    "time.sleep(600)\n"
)


async def test_background_counts_what_runs_in_the_session_cgroup_but_the_agent(
    tmp_path: Path,
) -> None:
    require_root()
    require_cgroup_v2()
    tree = CgroupTree.setup()
    try:
        session_cg = tree.session("t-activity").make()
        contained = SessionContainment(
            session_id="t-activity",
            user=None,
            limits=Limits(None, None, None, None),
            workdir=tmp_path,
            cgroup=session_cg,
        )
        env = {"PATH": os.environ["PATH"]}
        agent = await contained.launch(
            [sys.executable, "-c", _AGENT_WITH_A_CHILD],
            leaf="agent", cwd=tmp_path, env=env, stdin_pipe=True, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert agent.process.stdout is not None
        await agent.process.stdout.receive()  # forked and running
        assert background_processes(session_cg, agent.process.pid) == 1  # its child
        server = await contained.launch(
            ["sleep", "600"],
            leaf="term-dev", cwd=tmp_path, env=env, stdin_pipe=False, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert background_processes(session_cg, agent.process.pid) == 2
        assert background_processes(session_cg, None) == 3  # no agent: everything counts
        server.tree.kill()
        await server.process.wait()
        assert await gone(server.process.pid)
        assert background_processes(session_cg, agent.process.pid) == 1
        await contained.release()  # the session ends: its cgroup and all in it go
        assert await gone(agent.process.pid)
        await agent.process.aclose()
        await server.process.aclose()
        assert background_processes(session_cg, agent.process.pid) == 0
    finally:
        tree.close()


def test_activity_is_any_count() -> None:
    assert not Activity().any
    for field in ("turns", "permissions", "terminals", "background"):
        assert Activity(**{field: 1}).any
    assert Activity(1, 2, 3, 4).report() == {
        "turns": 1, "permissions": 2, "terminals": 3, "background": 4,
    }  # fmt: skip
