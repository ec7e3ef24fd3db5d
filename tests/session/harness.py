"""A real supervisor, a real event log on disk and real fake-agent processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from tests.processes import command_line, descendants, survivors
from vm_agent.acp.permissions import AskPolicy, PendingPermission, PermissionPolicy
from vm_agent.common.redact import Redactor
from vm_agent.core.machine import SessionPolicy
from vm_agent.eventlog import Event, EventLog
from vm_agent.process.agent_process import StopTimings
from vm_agent.process.catalog import AgentSpec, Catalog, fake_agent_command
from vm_agent.process.procgroup import group_alive
from vm_agent.session.config import SessionConfig
from vm_agent.session.session import AgentSession
from vm_agent.session.supervisor import Supervisor

QUICK_STOP = StopTimings(stdin_grace_s=0.3, term_grace_s=1.0)


def fake(scenario: str, *args: str, name: str | None = None) -> AgentSpec:
    return AgentSpec(
        name=name or scenario, command=fake_agent_command("--scenario", scenario, *args)
    )


@dataclass
class Harness:
    supervisor: Supervisor
    log: EventLog
    workdir: Path
    started: list[AgentSession] = field(default_factory=list)

    async def start(self, agent: str, **kw: Any) -> AgentSession:
        session = await self.supervisor.start_session(agent, self.workdir, **kw)
        self.started.append(session)
        return session

    async def ready(self, agent: str, **kw: Any) -> AgentSession:
        session = await self.start(agent, **kw)
        with anyio.fail_after(20):
            state = await session.wait_settled()
        assert state.value == "ready", session.describe()
        return session

    async def events(self, session: AgentSession) -> list[Event]:
        await self.log.flush()
        return await self.log.read(session.id, 0, 100_000)

    async def states(self, session: AgentSession) -> list[str]:
        return [e.data["state"] for e in await self.events(session) if e.type == "session.state"]

    async def of_type(self, session: AgentSession, kind: str) -> list[dict[str, Any]]:
        return [e.data for e in await self.events(session) if e.type == kind]


async def held_at_its_permission(s: AgentSession) -> PendingPermission:
    """Waits until the running prompt (the tools scenario, AskPolicy) waits for a person's
    answer: a prompt that runs for as long as a test needs, without a timing guess."""
    policy = s.permissions
    assert isinstance(policy, AskPolicy)
    with anyio.fail_after(20):
        while not policy.pending():
            await anyio.sleep(0.01)
    (pending,) = policy.pending()
    return pending


def text_prompt(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


@asynccontextmanager
async def running(
    tmp_path: Path,
    agents: list[AgentSpec],
    *,
    policy: SessionPolicy | None = None,
    permissions: type[PermissionPolicy] = AskPolicy,
    log_path: Path | None = None,
    start_timeout_s: float = 20,
) -> AsyncIterator[Harness]:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    config = SessionConfig(
        policy=policy or SessionPolicy(cancel_grace_s=1.0, backoff_base_s=0.05),
        stop_timings=QUICK_STOP,
        start_timeout_s=start_timeout_s,
    )
    async with EventLog.open(log_path or tmp_path / "events.sqlite3") as log:
        supervisor = Supervisor(
            log=log,
            catalog=Catalog({a.name: a for a in agents}),
            config=config,
            redactor=Redactor(),
            permission_policy=permissions,
        )
        harness = Harness(supervisor, log, workdir)
        before = descendants(os.getpid())
        seen: dict[int, int] = {}
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            try:
                yield harness
            finally:
                # What the agents started, whatever process group it went to, before the stop.
                seen = descendants(os.getpid())
                with anyio.CancelScope(shield=True):
                    await supervisor.shutdown(15)
                tg.cancel_scope.cancel()
    leftovers = [pid for s in harness.started for pid in s.spawned_pids if group_alive(pid)]
    assert leftovers == [], f"agent process groups still alive: {leftovers}"
    ours = {pid: start for pid, start in seen.items() if pid not in before}
    left = {pid: command_line(pid) for pid in survivors(ours)}
    assert left == {}, f"processes the agents started are still alive: {left}"
    new = {pid: command_line(pid) for pid in set(descendants(os.getpid())) - set(before)}
    assert new == {}, f"descendants of the test left behind: {new}"
