"""A real supervisor with real containment: pool users, session cgroups, workspace roots."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import anyio

from tests.containment.pool import TestPool, fake_agent_argv
from vm_agent.acp.permissions import AllowPolicy
from vm_agent.common.redact import Redactor
from vm_agent.containment.host import Containment, ContainmentConfig
from vm_agent.containment.limits import LimitDefaults
from vm_agent.core.machine import SessionPolicy
from vm_agent.eventlog import EventLog
from vm_agent.process.agent_process import StopTimings
from vm_agent.process.catalog import AgentSpec, Catalog
from vm_agent.session.config import SessionConfig
from vm_agent.session.session import AgentSession
from vm_agent.session.supervisor import Supervisor

SECRET_VAR = "VM_AGENT_TEST_SECRET"
SECRET = "s3cret-of-the-daemon"


def hostile_spec(name: str = "hostile", *args: str) -> AgentSpec:
    return AgentSpec(name=name, command=fake_agent_argv("--scenario", "hostile", *args))


@dataclass
class Contained:
    supervisor: Supervisor
    containment: Containment
    log: EventLog
    pool: TestPool
    state_dir: Path
    started: list[AgentSession] = field(default_factory=list)

    def workspace(self, name: str) -> Path:
        return self.pool.workspaces / name

    async def ready(self, agent: str, cwd: Path, **kw: Any) -> AgentSession:
        session = await self.supervisor.start_session(agent, cwd, **kw)
        self.started.append(session)
        with anyio.fail_after(60):
            state = await session.wait_settled()
        assert state.value == "ready", session.describe()
        return session

    async def attack(self, session: AgentSession, attacks: list[dict[str, Any]]) -> list[Any]:
        """Runs the hostile agent's attacks; their results (one per attack)."""
        prompt_id = f"p{len(session.outcomes) + 1}"
        before = self.log.head_seq(session.id)
        prompt = [{"type": "text", "text": json.dumps(attacks)}]
        with anyio.fail_after(120):
            outcome = await session.prompt(prompt_id, prompt)
        assert outcome.outcome == "completed", outcome
        await self.log.flush()
        events = await self.log.read(session.id, before, 100_000)
        text = "".join(
            e.data["update"]["content"]["text"]
            for e in events
            if e.type == "acp.update"
            and e.data["update"].get("sessionUpdate") == "agent_message_chunk"
        )
        results: list[Any] = json.loads(text)
        return results


def limit_defaults() -> LimitDefaults:
    return LimitDefaults(memory_mb=None, cpu_millis=None, pids_max=512, swap_mb=0)


@asynccontextmanager
async def contained(
    pool: TestPool,
    tmp_path: Path,
    agents: list[AgentSpec],
    *,
    cgroups: bool = True,
    defaults: LimitDefaults | None = None,
) -> AsyncIterator[Contained]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    config = ContainmentConfig(
        state_dir=state,
        pool=pool.spec,
        workspace_roots=(PurePosixPath(pool.workspaces),),
        protected=(state,),
        defaults=defaults or limit_defaults(),
        cgroups=cgroups,
    )
    containment = Containment.start(config)
    session_config = SessionConfig(
        policy=SessionPolicy(cancel_grace_s=1.0, backoff_base_s=0.05),
        stop_timings=StopTimings(stdin_grace_s=0.3, term_grace_s=1.0),
        start_timeout_s=60,
        daemon_env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": "/root",
            "USER": "root",
            "XDG_RUNTIME_DIR": "/run/user/0",
            SECRET_VAR: SECRET,
            "LANG": "C.UTF-8",
        },
    )
    try:
        async with EventLog.open(state / "events.sqlite3") as log:
            supervisor = Supervisor(
                log=log,
                catalog=Catalog({a.name: a for a in agents}),
                config=session_config,
                redactor=Redactor(),
                permission_policy=AllowPolicy,
                containment=containment,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                try:
                    yield Contained(supervisor, containment, log, pool, state)
                finally:
                    with anyio.CancelScope(shield=True):
                        await supervisor.shutdown(20)
                    tg.cancel_scope.cancel()
    finally:
        containment.close()


def alive(pid: int) -> bool:
    """A live process (a zombie waiting for PID 1 to reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def gone(pid: int, within_s: float = 10) -> bool:
    with anyio.move_on_after(within_s):
        while alive(pid):
            await anyio.sleep(0.05)
    return not alive(pid)


def refused_as(results: list[dict[str, Any]], expected: list[str]) -> None:
    """Each attack failed exactly as expected: an errno's name (``EACCES``), or the start of
    the daemon's error answer to an fs/* call (``rpc -32602: ...``). Any other failure (a
    path that does not exist, a mistyped attack) is a broken test, not a refusal."""
    assert len(results) == len(expected), results
    wrong = [
        {**result, "expected": how}
        for result, how in zip(results, expected, strict=True)
        if result["ok"]
        or not str(result.get("refused") or "").startswith(how)
        or (not how.startswith("rpc ") and result["refused"] != how)
    ]
    assert wrong == [], json.dumps(wrong, indent=1)
