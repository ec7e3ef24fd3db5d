"""What `vm-agent agent-users ensure` must do to make the pool exist. Pure.

Facts in (which users, groups and home directories exist), a plan out: the groups, users
and directories to create or fix, or the conflicts that stop it (a name or id that
belongs to something else). The shell (``ensure.py``) gathers the facts and runs the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from vm_agent.containment.users import AgentUser

HOME_MODE = 0o700
HOMES_PARENT_MODE = 0o755


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True, slots=True)
class DirState:
    is_dir: bool
    uid: int
    gid: int
    mode: int  # permission bits only


@dataclass(frozen=True, slots=True)
class Facts:
    users: Sequence[PasswdEntry] = ()
    groups: Mapping[str, int] = field(default_factory=dict)  # name -> gid
    dirs: Mapping[PurePosixPath, DirState] = field(default_factory=dict)  # what exists


@dataclass(frozen=True, slots=True)
class AddGroup:
    name: str
    gid: int


@dataclass(frozen=True, slots=True)
class AddUser:
    name: str
    uid: int
    gid: int
    home: PurePosixPath


@dataclass(frozen=True, slots=True)
class MakeDir:
    path: PurePosixPath
    uid: int
    gid: int
    mode: int


@dataclass(frozen=True, slots=True)
class FixDir:
    path: PurePosixPath
    uid: int
    gid: int
    mode: int


Action = AddGroup | AddUser | MakeDir | FixDir


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    conflicts: tuple[str, ...]

    @property
    def done(self) -> bool:
        """Nothing to do and nothing in the way: the pool exists as it should."""
        return not self.actions and not self.conflicts


def describe(action: Action) -> str:
    match action:
        case AddGroup(name=name, gid=gid):
            return f"create group {name} (gid {gid})"
        case AddUser(name=name, uid=uid, home=home):
            return f"create user {name} (uid {uid}, home {home})"
        case MakeDir(path=path, uid=uid, mode=mode):
            return f"create {path} (owner uid {uid}, mode {mode:04o})"
        case FixDir(path=path, uid=uid, mode=mode):
            return f"fix {path} (owner uid {uid}, mode {mode:04o})"


def _dir_actions(
    path: PurePosixPath, uid: int, gid: int, mode: int, dirs: Mapping[PurePosixPath, DirState]
) -> tuple[list[Action], list[str]]:
    state = dirs.get(path)
    if state is None:
        return [MakeDir(path, uid, gid, mode)], []
    if not state.is_dir:
        return [], [f"{path} exists and is not a directory"]
    if (state.uid, state.gid, state.mode) != (uid, gid, mode):
        return [FixDir(path, uid, gid, mode)], []
    return [], []


def plan_ensure(pool: Sequence[AgentUser], homes_dir: PurePosixPath, facts: Facts) -> Plan:
    by_name = {u.name: u for u in facts.users}
    by_uid = {u.uid: u.name for u in facts.users}
    gid_owner = {gid: name for name, gid in facts.groups.items()}
    actions: list[Action] = []
    conflicts: list[str] = []

    more, bad = _dir_actions(homes_dir, 0, 0, HOMES_PARENT_MODE, facts.dirs)
    actions += more
    conflicts += bad
    for user in pool:
        gid_now = facts.groups.get(user.name)
        if gid_now is None:
            holder = gid_owner.get(user.gid)
            if holder is not None:
                conflicts.append(f"gid {user.gid} belongs to group {holder}, not {user.name}")
            else:
                actions.append(AddGroup(user.name, user.gid))
        elif gid_now != user.gid:
            conflicts.append(f"group {user.name} exists with gid {gid_now}, not {user.gid}")

        entry = by_name.get(user.name)
        if entry is None:
            holder = by_uid.get(user.uid)
            if holder is not None:
                conflicts.append(f"uid {user.uid} belongs to user {holder}, not {user.name}")
            else:
                actions.append(AddUser(user.name, user.uid, user.gid, user.home))
        elif (entry.uid, entry.gid, entry.home) != (user.uid, user.gid, str(user.home)):
            conflicts.append(
                f"user {user.name} exists as uid {entry.uid} gid {entry.gid} home {entry.home}, "
                f"not uid {user.uid} gid {user.gid} home {user.home}"
            )

        more, bad = _dir_actions(user.home, user.uid, user.gid, HOME_MODE, facts.dirs)
        actions += more
        conflicts += bad
    if conflicts:
        return Plan((), tuple(conflicts))
    return Plan(tuple(actions), ())
