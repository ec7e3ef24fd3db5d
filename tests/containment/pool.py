"""A pool of real agent users for tests, made with the daemon's own `ensure` and removed after.

Tests need root for it (CI runs as root: there a missing root or cgroup fails the test;
elsewhere it skips). The pool has its own name prefix, uid range and homes, so it never
touches a real pool of the machine; a pool left by a killed test run is removed first.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tests import capabilities
from tests.capabilities import missing
from vm_agent.cli.dev_agents import AgentPython, copy_agent_code
from vm_agent.containment.cgroups import CgroupTree, CgroupUnavailable
from vm_agent.containment.ensure import ensure_pool, remove_pool
from vm_agent.containment.users import AgentUser, PoolSpec

REPO = Path(__file__).resolve().parents[2]
_PREFIX = re.compile(r"vmat(\d+)(?:x\d+)?-u\d+")


def require_root() -> None:
    capabilities.require_root("agent users, per-thread fsuid")


def require_cgroup_v2() -> None:
    """A writable cgroup v2 for this test process (a throwaway subtree is made and removed)."""
    try:
        tree = CgroupTree.setup()
    except CgroupUnavailable as exc:
        missing(f"no writable cgroup v2: {exc}")
    else:
        tree.close()


@dataclass(frozen=True)
class TestPool:
    __test__ = False  # not a test class, despite the name

    spec: PoolSpec
    base: Path  # 0755, so agent users can reach their homes and workspaces below it
    workspaces: Path

    def env(self) -> dict[str, str]:
        return {
            "VM_AGENT_AGENT_USERS": str(self.spec.count),
            "VM_AGENT_AGENT_UID_BASE": str(self.spec.uid_base),
            "VM_AGENT_AGENT_USER_PREFIX": self.spec.prefix,
            "VM_AGENT_AGENT_HOMES_DIR": str(self.spec.homes_dir),
            "VM_AGENT_WORKSPACE_ROOTS": str(self.workspaces),
        }


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _remove_stale_pools() -> None:
    stale: dict[int, list[pwd.struct_passwd]] = {}
    for entry in pwd.getpwall():
        match = _PREFIX.fullmatch(entry.pw_name)
        if match and not _alive(int(match[1])):
            stale.setdefault(int(match[1]), []).append(entry)
    for pid, entries in stale.items():
        for entry in entries:
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)
            with contextlib.suppress(KeyError):
                grp.getgrnam(entry.pw_name)
                subprocess.run(["groupdel", entry.pw_name], capture_output=True, check=False)
        for base in Path("/tmp").glob(f"vmat-{pid}*"):
            shutil.rmtree(base, ignore_errors=True)


def _taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        try:
            grp.getgrgid(uid)
        except KeyError:
            return False
    return True


def _free_uid_base(pid: int, count: int) -> int:
    # Test runs of several people share a machine: start from the pid's slot, take the
    # first whose ids nobody holds (a live run's pool keeps its own until it ends).
    for step in range(29):
        base = 62000 + ((pid + step) % 29) * 100
        if not any(_taken(base + i) for i in range(count)):
            return base
    return 62000 + (pid % 29) * 100


_pools_made = itertools.count()


def pool_spec_for(pid: int, count: int = 4, serial: int = 0) -> tuple[PoolSpec, Path]:
    # `serial`: a second pool of the same run (one test's, beside the session's) gets names
    # and ids of its own, never the first one's names with other ids
    tag = f"{pid}x{serial}" if serial else str(pid)
    base = Path(f"/tmp/vmat-{tag}")  # below /tmp on purpose: ancestors agent users can enter
    spec = PoolSpec(
        count=count,
        uid_base=_free_uid_base(pid, count),
        prefix=f"vmat{tag}-u",
        homes_dir=PurePosixPath(base / "homes"),
    )
    return spec, base


# How the fake agent is started as a pool user: the same way `vm-agent dev` does it.
_AGENT_PYTHON: list[AgentPython] = []


def _copy_for_agents(base: Path) -> list[str]:
    """This checkout's vm_agent and the agent's packages, where agent users can read them."""
    copy_agent_code(base / "py")
    return [str(base / "py")]


def fake_agent_argv(*args: str) -> tuple[str, ...]:
    """The fake agent as a pool user can start it (after ``check_users_can_run_us``)."""
    assert _AGENT_PYTHON, "check_users_can_run_us first"
    return tuple(_AGENT_PYTHON[0].argv(*args))


def _runs_as(user: AgentUser, argv: list[str]) -> str | None:
    """None if ``argv`` runs as ``user``; else why not."""
    try:
        done = subprocess.run(
            argv,
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=60,
            check=False,
        )
    except OSError as exc:
        return exc.strerror or str(exc)
    return None if done.returncode == 0 else done.stderr.strip()[-200:]


def check_users_can_run_us(spec: PoolSpec, base: Path) -> None:
    """The fake agent runs as a pool user: find an interpreter and paths they can use.

    This interpreter may live where agent users cannot go (pyenv under /root), and so may
    the checkout: then the system's interpreter, and if need be copies of what it imports.
    """
    user = spec.user(0)
    here = [str(REPO), sysconfig.get_paths()["purelib"]]
    errors = []
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        for copied in (False, True):
            paths = _copy_for_agents(base) if copied else here
            why = _runs_as(user, AgentPython(python, tuple(paths)).argv("--help"))
            if why is None:
                _AGENT_PYTHON[:] = [AgentPython(python, tuple(paths))]
                return
            errors.append(f"{python} with {paths}: {why}")
    missing(f"agent users cannot run the fake agent: {'; '.join(errors)}")


@contextlib.contextmanager
def made_pool(count: int = 4) -> Iterator[TestPool]:
    require_root()
    _remove_stale_pools()
    spec, base = pool_spec_for(os.getpid(), count, next(_pools_made))
    base.mkdir(mode=0o755, exist_ok=True)
    base.chmod(0o755)
    workspaces = base / "ws"
    workspaces.mkdir(mode=0o755, exist_ok=True)
    try:
        ensure_pool(spec)
        check_users_can_run_us(spec, base)
        yield TestPool(spec, base, workspaces)
    finally:
        remove_pool(spec)
        shutil.rmtree(base, ignore_errors=True)
