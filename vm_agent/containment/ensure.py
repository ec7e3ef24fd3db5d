"""The shell of `vm-agent agent-users ensure`: read the accounts, run the pool's plan.

Runs before the unit starts (inside it /etc is read-only), from cloud-init, and from
`vm-agent dev` as root. Idempotent: a second run finds nothing to do.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from vm_agent.containment.accounts import (
    Action,
    AddGroup,
    AddUser,
    DirState,
    Facts,
    FixDir,
    MakeDir,
    PasswdEntry,
    Plan,
    describe,
    plan_ensure,
)
from vm_agent.containment.users import PoolSpec

_COMMENT = "vm-agent agent user"


class EnsureError(Exception):
    """The pool cannot be made as asked (a conflict, or a command failed)."""


def gather_facts(pool: PoolSpec) -> Facts:
    users = [PasswdEntry(p.pw_name, p.pw_uid, p.pw_gid, p.pw_dir) for p in pwd.getpwall()]
    groups = {g.gr_name: g.gr_gid for g in grp.getgrall()}
    dirs: dict[PurePosixPath, DirState] = {}
    for path in (pool.homes_dir, *(u.home for u in pool.users())):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        dirs[path] = DirState(
            stat.S_ISDIR(st.st_mode), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
        )
    return Facts(users=users, groups=groups, dirs=dirs)


def plan_for(pool: PoolSpec) -> Plan:
    return plan_ensure(pool.users(), pool.homes_dir, gather_facts(pool))


def _login_shell() -> str:
    # Agents start the user's shell from the passwd entry: a nologin shell breaks them.
    return "/bin/bash" if Path("/bin/bash").exists() else "/bin/sh"


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EnsureError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")


def _carry_out(action: Action) -> None:
    match action:
        case AddGroup(name=name, gid=gid):
            _run([_tool("groupadd"), "--gid", str(gid), name])
        case AddUser(name=name, uid=uid, gid=gid, home=home):
            _run(
                [
                    _tool("useradd"),
                    "--system",
                    "--no-create-home",
                    "--uid",
                    str(uid),
                    "--gid",
                    str(gid),
                    "--home-dir",
                    str(home),
                    "--shell",
                    _login_shell(),
                    "--comment",
                    _COMMENT,
                    name,
                ]
            )
        case (
            MakeDir(path=path, uid=uid, gid=gid, mode=mode)
            | FixDir(path=path, uid=uid, gid=gid, mode=mode)
        ):
            if isinstance(action, MakeDir):
                os.mkdir(path, mode)
            # Through a descriptor opened without following links: the path may be a
            # directory an agent user could have replaced.
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise EnsureError(f"{name} is not installed (Debian package passwd)")
    return found


def ensure_pool(pool: PoolSpec, say: Callable[[str], None] = lambda _: None) -> Plan:
    """Creates what is missing; raises ``EnsureError`` (having changed nothing) on conflicts."""
    plan = plan_for(pool)
    if plan.conflicts:
        raise EnsureError("; ".join(plan.conflicts))
    for action in plan.actions:
        say(describe(action))
        _carry_out(action)
    return plan


def remove_pool(pool: PoolSpec) -> None:
    """Deletes the pool's users, groups and homes (for tests that made a pool of their own)."""
    for user in pool.users():
        try:
            entry = pwd.getpwnam(user.name)
        except KeyError:
            pass
        else:
            if entry.pw_uid == user.uid:
                subprocess.run([_tool("userdel"), user.name], capture_output=True, check=False)
        try:
            group = grp.getgrnam(user.name)
        except KeyError:
            pass
        else:
            if group.gr_gid == user.gid:
                subprocess.run([_tool("groupdel"), user.name], capture_output=True, check=False)
    shutil.rmtree(pool.homes_dir, ignore_errors=True)
