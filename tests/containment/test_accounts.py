"""What creating the pool takes, from what exists: tables of cases (pure)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from vm_agent.containment.accounts import (
    AddGroup,
    AddUser,
    DirState,
    Facts,
    FixDir,
    MakeDir,
    PasswdEntry,
    describe,
    plan_ensure,
)
from vm_agent.containment.users import PoolSpec

HOMES = PurePosixPath("/var/lib/vm-agent-homes")
POOL = PoolSpec(count=2, uid_base=61000)
U0, U1 = POOL.users()


def _complete() -> Facts:
    return Facts(
        users=[
            PasswdEntry("root", 0, 0, "/root"),
            PasswdEntry(U0.name, U0.uid, U0.gid, str(U0.home)),
            PasswdEntry(U1.name, U1.uid, U1.gid, str(U1.home)),
        ],
        groups={"root": 0, U0.name: U0.gid, U1.name: U1.gid},
        dirs={
            HOMES: DirState(True, 0, 0, 0o755),
            U0.home: DirState(True, U0.uid, U0.gid, 0o700),
            U1.home: DirState(True, U1.uid, U1.gid, 0o700),
        },
    )


def test_nothing_exists_yet() -> None:
    plan = plan_ensure(POOL.users(), HOMES, Facts(groups={"root": 0}))
    assert plan.conflicts == ()
    assert plan.actions == (
        MakeDir(HOMES, 0, 0, 0o755),
        AddGroup(U0.name, U0.gid),
        AddUser(U0.name, U0.uid, U0.gid, U0.home),
        MakeDir(U0.home, U0.uid, U0.gid, 0o700),
        AddGroup(U1.name, U1.gid),
        AddUser(U1.name, U1.uid, U1.gid, U1.home),
        MakeDir(U1.home, U1.uid, U1.gid, 0o700),
    )
    assert [describe(a) for a in plan.actions][2] == (
        "create user vm-agent-u0 (uid 61000, home /var/lib/vm-agent-homes/vm-agent-u0)"
    )


def test_all_there_is_done() -> None:
    plan = plan_ensure(POOL.users(), HOMES, _complete())
    assert plan.done and plan.actions == () and plan.conflicts == ()


def test_a_home_with_wrong_owner_or_mode_is_fixed() -> None:
    facts = _complete()
    dirs = dict(facts.dirs)
    dirs[U1.home] = DirState(True, 0, 0, 0o755)
    dirs[HOMES] = DirState(True, 0, 0, 0o777)
    plan = plan_ensure(POOL.users(), HOMES, Facts(facts.users, facts.groups, dirs))
    assert plan.actions == (FixDir(HOMES, 0, 0, 0o755), FixDir(U1.home, U1.uid, U1.gid, 0o700))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("uid taken", "uid 61001 belongs to user someone"),
        ("gid taken", "gid 61001 belongs to group staffish"),
        ("user differs", "user vm-agent-u1 exists as uid 5000"),
        ("group differs", "group vm-agent-u1 exists with gid 5000"),
        ("home a file", "/var/lib/vm-agent-homes/vm-agent-u1 exists and is not a directory"),
    ],
)
def test_conflicts_stop_everything(change: str, message: str) -> None:
    facts = _complete()
    users = [u for u in facts.users if u.name != U1.name]
    groups = {k: v for k, v in facts.groups.items() if k != U1.name}
    dirs = dict(facts.dirs)
    match change:
        case "uid taken":
            users.append(PasswdEntry("someone", U1.uid, 100, "/home/someone"))
            groups[U1.name] = U1.gid
        case "gid taken":
            groups["staffish"] = U1.gid
            users.append(PasswdEntry(U1.name, U1.uid, U1.gid, str(U1.home)))
        case "user differs":
            users.append(PasswdEntry(U1.name, 5000, 5000, "/home/x"))
            groups[U1.name] = U1.gid
        case "group differs":
            groups[U1.name] = 5000
            users.append(PasswdEntry(U1.name, U1.uid, U1.gid, str(U1.home)))
        case "home a file":
            users.append(PasswdEntry(U1.name, U1.uid, U1.gid, str(U1.home)))
            groups[U1.name] = U1.gid
            dirs[U1.home] = DirState(False, 0, 0, 0o644)
    plan = plan_ensure(POOL.users(), HOMES, Facts(users, groups, dirs))
    assert plan.actions == ()  # nothing at all is done when something is in the way
    assert any(message in c for c in plan.conflicts), plan.conflicts
