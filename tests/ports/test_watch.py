"""The ports watch against a real event log: reports once per change, by uid without a
cgroup, and a restarted daemon reports a server that died with the last one as gone."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from vm_agent.containment.limits import Limits
from vm_agent.containment.session import SessionContainment
from vm_agent.containment.users import AgentUser
from vm_agent.eventlog import EventLog
from vm_agent.ports.watch import PortWatch

pytestmark = pytest.mark.anyio

NOBODYS_UID = 64_999  # owns no listening socket here


def _uid_only(tmp_path: Path) -> SessionContainment:
    user = AgentUser("vm-agent-u999", NOBODYS_UID, NOBODYS_UID, PurePosixPath("/nonexistent"))
    return SessionContainment(
        session_id="s1",
        user=user,
        limits=Limits(None, None, None, None),
        workdir=tmp_path,
    )


async def test_a_restarted_daemon_reports_the_servers_the_last_one_had_as_gone(
    tmp_path: Path,
) -> None:
    contained = _uid_only(tmp_path)
    async with EventLog.open(tmp_path / "events.sqlite3") as log:
        stale = {"ports": [{"port": 8000, "address": "127.0.0.1"}], "by": "uid"}
        await log.append("s1", "ports.changed", stale)  # what the dead daemon last said
        await log.append("s2", "ports.changed", {"ports": [], "by": "uid"})
        watch = PortWatch(lambda: [("s1", contained), ("s2", None)], log)
        await watch.load_last()
        assert await watch.scan_once() == [("s1", [])]
        assert await watch.scan_once() == []
        await log.flush()
        events = [e for e in await log.read("s1", 0, 100) if e.type == "ports.changed"]
        assert [e.data for e in events] == [stale, {"ports": [], "by": "uid"}]
