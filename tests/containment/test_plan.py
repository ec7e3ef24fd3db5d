"""The whole decision for one session (which user, which limits, which paths): pure."""

from __future__ import annotations

from pathlib import PurePosixPath as P
from typing import Any

import pytest

from vm_agent.containment.limits import LimitDefaults
from vm_agent.containment.plan import Policy, agent_env, plan_session
from vm_agent.containment.users import PoolExhausted, PoolSpec, RunAs

POOL = PoolSpec(count=2, uid_base=61000)


def _policy(run_as: RunAs = RunAs.POOL) -> Policy:
    return Policy(
        run_as=run_as,
        pool=POOL,
        roots=(P("/srv/workspaces"),),
        forbidden=(P("/srv/workspaces/state/events.sqlite3"),),
        defaults=LimitDefaults(memory_mb=1024, cpu_millis=None, pids_max=512, swap_mb=0),
    )


# run_as, owner, owner table before, reservation -> user, memory MB, cpu millis
CASES: list[tuple[RunAs, str | None, dict[str | None, int], Any, str | None, int, int | None]] = [
    (RunAs.POOL, "alice", {}, None, "vm-agent-u0", 1024, None),
    (RunAs.POOL, "bob", {"alice": 0}, {"cpuMillis": 1500}, "vm-agent-u1", 1024, 1500),
    (RunAs.POOL, "alice", {"bob": 0, "alice": 1}, {"memoryMb": 64}, "vm-agent-u1", 64, None),
    (RunAs.POOL, None, {}, None, "vm-agent-u0", 1024, None),
    (RunAs.DAEMON, "alice", {}, None, None, 1024, None),
]


@pytest.mark.parametrize("case", CASES)
def test_plan_session(case: tuple[Any, ...]) -> None:
    run_as, owner, table, reservation, user, memory, cpu = case
    plan = plan_session(
        _policy(run_as),
        owner=owner,
        reservation=reservation,
        cwd="/srv/workspaces/proj",
        table=table,
    )
    assert (plan.user.name if plan.user else None) == user
    assert (plan.limits.memory_mb, plan.limits.cpu_millis, plan.limits.pids_max) == (
        memory,
        cpu,
        512,
    )
    assert plan.workdir.path == P("/srv/workspaces/proj")
    if run_as is RunAs.POOL:
        assert owner in plan.table
    else:
        assert plan.table == table  # no user is taken for an agent run as the daemon


@pytest.mark.parametrize(
    ("cwd", "owner", "table", "reservation", "error"),
    [
        ("/", "a", {}, None, "not under a workspace root"),
        ("/srv/workspaces/state", "a", {}, None, "overlaps"),
        ("/srv/workspaces", "a", {}, None, "workspace root itself"),
        ("/srv/workspaces/p", "c", {"a": 0, "b": 1}, None, "all 2 agent users"),
        ("/srv/workspaces/p", "a", {}, {"memoryMb": -5}, "negative"),
    ],
)
def test_refusals_are_value_errors(
    cwd: str, owner: str, table: dict[str | None, int], reservation: Any, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        plan_session(_policy(), owner=owner, reservation=reservation, cwd=cwd, table=table)


def test_exhaustion_is_its_own_type() -> None:
    with pytest.raises(PoolExhausted):
        plan_session(
            _policy(), owner="c", reservation=None, cwd="/srv/workspaces/p", table={"a": 0, "b": 1}
        )


def test_agent_env_for_a_pool_user() -> None:
    daemon = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "XDG_RUNTIME_DIR": "/run/user/0",
        "XDG_CONFIG_HOME": "/root/.config",
        "LANG": "C.UTF-8",
    }
    env = agent_env(daemon, POOL.user(1))
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/var/lib/vm-agent-homes/vm-agent-u1",
        "USER": "vm-agent-u1",
        "LOGNAME": "vm-agent-u1",
        "LANG": "C.UTF-8",
    }
    assert agent_env(daemon, None) == daemon
