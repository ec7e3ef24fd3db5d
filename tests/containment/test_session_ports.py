"""The ports a session's processes listen on: a server started in its terminal is its
session's, not another session's, and the daemon's own listening sockets are no session's
(real pool users and cgroups; the ports scan reads /proc as the daemon does)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import anyio
import pytest

from tests.containment.harness import contained, hostile_spec
from tests.containment.pool import TestPool, require_cgroup_v2, require_root
from vm_agent.eventlog import EventLog
from vm_agent.ports.scan import ports_of
from vm_agent.ports.watch import PortWatch
from vm_agent.server.terminal_methods import where_of
from vm_agent.terminals.registry import TerminalRegistry

pytestmark = pytest.mark.anyio


async def _output(log: EventLog, session_id: str) -> str:
    await log.flush()
    events = await log.read(session_id, 0, 100_000)
    return "".join(e.data["data"] for e in events if e.type == "terminal.output")


async def test_a_server_in_a_session_is_that_sessions_port_only(
    agent_pool: TestPool, tmp_path: Path
) -> None:
    require_root()
    require_cgroup_v2()
    async with contained(agent_pool, tmp_path, [hostile_spec()]) as c:
        mine = await c.ready("hostile", c.workspace("ports-a"), owner="pia")
        other = await c.ready("hostile", c.workspace("ports-b"), owner="otto")
        same_owner = await c.ready("hostile", c.workspace("ports-c"), owner="pia")
        watch = PortWatch(lambda: [(s.id, s.containment) for s in (mine, other, same_owner)], c.log)
        assert await watch.scan_once() == []  # nothing listens yet: nothing to report
        registry = TerminalRegistry(c.log)
        # The daemon's own listening socket (as the viewer port is): no session's.
        with socket.socket() as daemons:
            daemons.bind(("127.0.0.1", 0))
            daemons.listen()
            daemon_port = daemons.getsockname()[1]
            async with anyio.create_task_group() as tg:
                term = await registry.open(tg, where_of(mine), cols=120, rows=24, opened_by="pia")
                await term.write(b"python3 -m http.server 0 --bind 127.0.0.1\n")
                with anyio.fail_after(30):
                    while not (found := re.search(r"port (\d+)", await _output(c.log, mine.id))):
                        await anyio.sleep(0.05)
                port = int(found[1])
                listed, by = ports_of(mine.containment)
                assert (listed, by) == ([{"port": port, "address": "127.0.0.1"}], "cgroup")
                # Another owner's session, and the same owner's other session (the same agent
                # user: only its cgroup tells them apart), see none of it.
                assert ports_of(other.containment) == ([], "cgroup")
                assert ports_of(same_owner.containment) == ([], "cgroup")
                assert daemon_port not in [p["port"] for p in listed]
                reported = await watch.scan_once()
                assert reported == [(mine.id, listed)]
                assert await watch.scan_once() == []  # unchanged: not again
                await term.close()
                tg.cancel_scope.cancel()
        assert await watch.scan_once() == [(mine.id, [])]  # the server went with the terminal
        events = [e for e in await c.log.read(mine.id, 0, 100_000) if e.type == "ports.changed"]
        assert [e.data for e in events] == [
            {"ports": listed, "by": "cgroup"},
            {"ports": [], "by": "cgroup"},
        ]
