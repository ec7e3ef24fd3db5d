"""The containment decision for one session: which user, which limits, which paths. Pure.

From the session's owner, reservation and requested cwd, and the daemon's policy (run as
pool users or as itself, the pool, the workspace roots, the default limits) to a
``SessionPlan``. Every refusal is a ``ValueError`` whose message is for a person.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from vm_agent.containment.limits import LimitDefaults, Limits, limits_for
from vm_agent.containment.paths import Workdir, check_workdir
from vm_agent.containment.users import AgentUser, Owner, PoolSpec, RunAs, assign

# What describes the daemon's own user in an agent's environment; replaced for pool users.
_USER_VARS = ("HOME", "USER", "LOGNAME")
# Point at the daemon user's directories: an agent user could not use them anyway.
_DROPPED_FOR_USERS = ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME")
AGENT_UMASK = 0o077


@dataclass(frozen=True, slots=True)
class Policy:
    run_as: RunAs
    pool: PoolSpec
    roots: tuple[PurePosixPath, ...]
    forbidden: tuple[PurePosixPath, ...]
    defaults: LimitDefaults


@dataclass(frozen=True, slots=True)
class SessionPlan:
    user: AgentUser | None  # None: the agent runs as the daemon's own user
    limits: Limits
    workdir: Workdir
    table: Mapping[Owner, int]  # the owner table with this session's owner in it

    @property
    def describe_user(self) -> str:
        return "the daemon's own user" if self.user is None else self.user.name


def plan_session(
    policy: Policy,
    *,
    owner: Owner,
    reservation: str | Mapping[str, Any] | None,
    cwd: str,
    table: Mapping[Owner, int],
) -> SessionPlan:
    workdir = check_workdir(cwd, policy.roots, policy.forbidden)
    limits = limits_for(reservation, policy.defaults)
    user: AgentUser | None = None
    new_table: Mapping[Owner, int] = table
    if policy.run_as is RunAs.POOL:
        index, new_table = assign(owner, table, policy.pool.count)
        user = policy.pool.user(index)
    return SessionPlan(user=user, limits=limits, workdir=workdir, table=new_table)


def agent_env(env: Mapping[str, str], user: AgentUser | None) -> dict[str, str]:
    """``env`` for a process of ``user``: its own HOME and names, none of the daemon's dirs."""
    out = dict(env)
    if user is None:
        return out
    for name in _DROPPED_FOR_USERS:
        out.pop(name, None)
    out.update({"HOME": str(user.home), "USER": user.name, "LOGNAME": user.name})
    return out
