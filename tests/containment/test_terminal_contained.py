"""A person's terminal as the session's agent user, in a leaf of the session's cgroup; it
and what it started (setsid or not) die with the session (real pool users and cgroups)."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from tests.containment.harness import alive, contained, gone, hostile_spec
from tests.containment.pool import TestPool, require_cgroup_v2, require_root
from vm_agent.eventlog import EventLog
from vm_agent.server.terminal_methods import where_of
from vm_agent.terminals.registry import TerminalRegistry

pytestmark = pytest.mark.anyio


async def _output(log: EventLog, session_id: str, terminal_id: str) -> str:
    await log.flush()
    events = await log.read(session_id, 0, 100_000)
    return "".join(
        e.data["data"]
        for e in events
        if e.type == "terminal.output" and e.data["terminal_id"] == terminal_id
    )


async def test_a_terminal_is_the_agent_users_and_dies_with_the_session(
    agent_pool: TestPool, tmp_path: Path
) -> None:
    require_root()
    require_cgroup_v2()
    async with contained(agent_pool, tmp_path, [hostile_spec()]) as c:
        ws = c.workspace("term-proj")
        session = await c.ready("hostile", ws, owner="tess")
        assert session.containment is not None and session.containment.user is not None
        user = session.containment.user
        registry = TerminalRegistry(c.log)
        async with anyio.create_task_group() as tg:
            term = await registry.open(tg, where_of(session), cols=80, rows=24, opened_by="tess")
            tid = term.terminal_id
            await term.write(
                b"echo id-$(id -u)-$(id -g); cat /proc/self/cgroup; echo home-$HOME; "
                b"setsid sh -c 'echo $$ > escaped.pid; exec sleep 300' & echo done-$((1+1))\n"
            )
            with anyio.fail_after(20):
                while (
                    "done-2" not in (text := await _output(c.log, session.id, tid))
                    or not (ws / "escaped.pid").exists()
                ):
                    await anyio.sleep(0.05)
            assert f"id-{user.uid}-{user.gid}" in text
            assert f"home-{user.home}" in text
            assert re.search(rf"session-{session.id}/{tid}-\d+", text), text
            escaped = int((ws / "escaped.pid").read_text())
            assert alive(escaped)
            # The session ends in this daemon: the terminal, and what it started, go with it.
            session.close()
            with anyio.fail_after(30):
                await term.ended.wait()
            assert term.exit is not None
            assert await gone(escaped)
        assert registry.of(session.id) == {}
