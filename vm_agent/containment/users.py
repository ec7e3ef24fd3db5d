"""The agent-user pool (docs/containment.md) and which owner gets which user. Pure.

Users are ``{prefix}{i}`` with uid = gid = ``uid_base + i`` and a home of their own.
An owner keeps the user it was given (its HOME holds the agent's own session files, which
``session/load`` needs); different owners never share one. The table is persisted by the
shell; this module only decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath

DEFAULT_PREFIX = "vm-agent-u"
DEFAULT_HOMES_DIR = PurePosixPath("/var/lib/vm-agent-homes")
# Owner keys of the assignment table: the session owner, or None for sessions without one.
Owner = str | None


class PoolExhausted(ValueError):
    """Every user of the pool belongs to another owner already."""


@dataclass(frozen=True, slots=True)
class AgentUser:
    name: str
    uid: int
    gid: int
    home: PurePosixPath


@dataclass(frozen=True, slots=True)
class PoolSpec:
    count: int
    uid_base: int
    prefix: str = DEFAULT_PREFIX
    homes_dir: PurePosixPath = DEFAULT_HOMES_DIR

    def user(self, index: int) -> AgentUser:
        if not 0 <= index < self.count:
            raise IndexError(f"agent user {index} is outside the pool of {self.count}")
        name = f"{self.prefix}{index}"
        uid = self.uid_base + index
        return AgentUser(name=name, uid=uid, gid=uid, home=self.homes_dir / name)

    def users(self) -> tuple[AgentUser, ...]:
        return tuple(self.user(i) for i in range(self.count))


def clean_table(table: Mapping[Owner, int], count: int) -> dict[Owner, int]:
    """The usable part of a persisted table: indexes inside the pool, none given twice.

    A damaged table must never make two owners share a user: a repeated index stays with
    the first owner that holds it (the table's order is its order of assignment).
    """
    seen: set[int] = set()
    out: dict[Owner, int] = {}
    for owner, index in table.items():
        if isinstance(index, int) and 0 <= index < count and index not in seen:
            out[owner] = index
            seen.add(index)
    return out


def assign(owner: Owner, table: Mapping[Owner, int], count: int) -> tuple[int, dict[Owner, int]]:
    """The owner's user index and the table with it; the lowest free index for a newcomer."""
    current = clean_table(table, count)
    if owner in current:
        return current[owner], current
    taken = set(current.values())
    for index in range(count):
        if index not in taken:
            return index, {**current, owner: index}
    raise PoolExhausted(
        f"all {count} agent users belong to other owners; "
        "raise VM_AGENT_AGENT_USERS (and create them with `vm-agent agent-users ensure`)"
    )


class RunAs(Enum):
    POOL = "pool"  # each owner's agents run as its own pool user
    DAEMON = "daemon"  # agents run as the daemon's own user


@dataclass(frozen=True, slots=True)
class RunAsDecision:
    mode: RunAs
    warning: str | None = None  # logged as a warning once at start
    note: str | None = None  # logged once at start


def decide_run_as(euid: int, agents_as_root: bool) -> RunAsDecision:
    if euid == 0 and not agents_as_root:
        return RunAsDecision(RunAs.POOL)
    if euid == 0:
        return RunAsDecision(
            RunAs.DAEMON,
            warning=(
                "agents run as root (VM_AGENT_AGENTS_AS_ROOT=1): an agent can read the "
                "daemon's secrets and every other session's files"
            ),
        )
    return RunAsDecision(
        RunAs.DAEMON,
        note=(
            f"the daemon runs as uid {euid}, not root: agents run as that same user, so "
            "sessions of different owners are not kept apart"
        ),
    )
