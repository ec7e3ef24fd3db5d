"""The daemon's containment, set up once at start; it prepares each session's.

At start it says, once, how agents will run: as pool users or as the daemon's user (with
a warning when that is root), and with which cgroup support (full, without some
controllers, or none: process groups only). ``prepare`` turns a session's owner,
reservation and cwd into a ``SessionContainment`` (or refuses with a ``ValueError``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import anyio

from vm_agent.containment import ensure
from vm_agent.containment.accounts import describe
from vm_agent.containment.assignments import FILE_NAME, load_table, save_table
from vm_agent.containment.cgroupfs import CgroupDir
from vm_agent.containment.cgroups import WANTED, CgroupTree, CgroupUnavailable
from vm_agent.containment.limits import LimitDefaults, Limits, unenforced
from vm_agent.containment.paths import Workdir, WorkdirRefused, overlapping
from vm_agent.containment.plan import Policy, plan_session
from vm_agent.containment.session import SessionContainment
from vm_agent.containment.users import Owner, PoolSpec, RunAs, decide_run_as
from vm_agent.containment.workdir import Owner as DirOwner
from vm_agent.containment.workdir import prepare_workdir

log = logging.getLogger(__name__)


class ContainmentStartError(Exception):
    """The daemon cannot contain agents as configured; one line for a person."""


@dataclass(frozen=True, slots=True)
class ContainmentConfig:
    """What containment needs of the daemon's settings (``daemon.containment_config``)."""

    state_dir: Path
    pool: PoolSpec
    workspace_roots: tuple[PurePosixPath, ...]
    protected: tuple[Path, ...]  # the daemon's own files: never a workspace
    defaults: LimitDefaults
    agents_as_root: bool = False
    cgroups: bool = True


def machine_memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _both_forms(paths: tuple[Path, ...]) -> tuple[PurePosixPath, ...]:
    out: list[PurePosixPath] = []
    for path in paths:
        for form in (path.absolute(), Path(os.path.realpath(path))):
            if PurePosixPath(form) not in out:
                out.append(PurePosixPath(form))
    return tuple(out)


class Containment:
    def __init__(self, config: ContainmentConfig, policy: Policy, tree: CgroupTree | None) -> None:
        self.config = config
        self.policy = policy
        self.tree = tree
        self._table_path = config.state_dir / FILE_NAME
        self._table: Mapping[Owner, int] = load_table(self._table_path)
        self._lock = anyio.Lock()
        self._sessions: dict[str, SessionContainment] = {}
        self._warned_files: set[str] = set()

    @property
    def run_as(self) -> RunAs:
        return self.policy.run_as

    @classmethod
    def start(cls, config: ContainmentConfig, *, ensure_pool: bool = False) -> Containment:
        decision = decide_run_as(os.geteuid(), config.agents_as_root)
        if decision.warning:
            log.warning("%s", decision.warning)
        if decision.note:
            log.warning("%s", decision.note)
        if decision.mode is RunAs.POOL:
            cls._check_pool(config.pool, ensure_pool)
            log.info(
                "agents run as the pool users %s0..%d (uid %d..%d)",
                config.pool.prefix,
                config.pool.count - 1,
                config.pool.uid_base,
                config.pool.uid_base + config.pool.count - 1,
            )
        for root in config.workspace_roots:
            if not os.path.isdir(root):
                log.warning("workspace root %s does not exist: sessions there are refused", root)
        tree = cls._cgroups(config)
        policy = Policy(
            run_as=decision.mode,
            pool=config.pool,
            roots=config.workspace_roots,
            forbidden=_both_forms(config.protected),
            defaults=config.defaults,
        )
        return cls(config, policy, tree)

    @staticmethod
    def _check_pool(pool: PoolSpec, ensure_pool: bool) -> None:
        if ensure_pool:
            try:
                ensure.ensure_pool(pool, say=lambda what: log.info("agent users: %s", what))
            except (ensure.EnsureError, OSError) as exc:
                raise ContainmentStartError(f"cannot create the agent users: {exc}") from exc
            return
        plan = ensure.plan_for(pool)
        if plan.done:
            return
        missing = list(plan.conflicts) or [describe(a) for a in plan.actions]
        raise ContainmentStartError(
            "the agent users are not as they should be (to do: "
            + "; ".join(missing[:4])
            + (" ..." if len(missing) > 4 else "")
            + "); run `vm-agent agent-users ensure` as root"
        )

    @staticmethod
    def _cgroups(config: ContainmentConfig) -> CgroupTree | None:
        if not config.cgroups:
            log.warning(
                "cgroups are off (VM_AGENT_CGROUPS=0): sessions are tracked by process group, "
                "a descendant that calls setsid outlives a stop, and no limit applies"
            )
            return None
        try:
            tree = CgroupTree.setup()
        except CgroupUnavailable as exc:
            log.warning(
                "no writable cgroup v2 (%s): sessions are tracked by process group, a "
                "descendant that calls setsid outlives a stop, and no memory, cpu or pids "
                "limit applies",
                exc,
            )
            return None
        missing = sorted(WANTED - tree.controllers)
        if missing:
            log.warning(
                "cgroup v2 at %s without the %s controller(s): %s cannot be enforced; "
                "sessions are still tracked and killed as a whole",
                tree.base.path,
                ", ".join(missing),
                ", ".join(f"{c}.max" for c in missing),
            )
        else:
            log.info("session cgroups under %s (memory, cpu, pids limits)", tree.base.path)
        return tree

    async def prepare(
        self,
        session_id: str,
        *,
        owner: Owner,
        reservation: str | Mapping[str, Any] | None,
        cwd: str,
    ) -> SessionContainment:
        async with self._lock:
            plan = plan_session(
                self.policy, owner=owner, reservation=reservation, cwd=cwd, table=self._table
            )
            if plan.table != self._table:
                await anyio.to_thread.run_sync(save_table, self._table_path, plan.table)
                self._table = plan.table
        if plan.user is not None:
            who = DirOwner(plan.user.uid, plan.user.gid, switch=True)
        else:
            who = DirOwner(os.geteuid(), os.getegid(), switch=False)
        workdir = await anyio.to_thread.run_sync(self._prepare_workdir, plan.workdir, who)
        maker = None
        if self.tree is not None:
            maker = partial(self._session_cgroup, self.tree, session_id, plan.limits)
        contained = SessionContainment(
            session_id=session_id,
            user=plan.user,
            limits=plan.limits,
            workdir=workdir,
            make_cgroup=maker,
            on_release=partial(self.forget, session_id),
        )
        log.info(
            "session %s runs as %s in %s (%s)",
            session_id,
            plan.describe_user,
            workdir,
            plan.limits.describe() if self.tree is not None else "no cgroup",
        )
        self._sessions[session_id] = contained
        return contained

    def _prepare_workdir(self, workdir: Workdir, who: DirOwner) -> Path:
        # Where it really is, the root's own links resolved: still not the daemon's files.
        real = PurePosixPath(os.path.realpath(workdir.root)).joinpath(*workdir.parts)
        if bad := overlapping(real, self.policy.forbidden):
            raise WorkdirRefused(f"cwd {workdir.path} overlaps the daemon's own files ({bad})")
        return prepare_workdir(workdir, who)

    def _session_cgroup(self, tree: CgroupTree, session_id: str, limits: Limits) -> CgroupDir:
        # Made fresh: what an earlier daemon left was removed when this one started.
        cgroup = tree.session(session_id).make()
        self._apply_limits(tree, cgroup, limits)
        return cgroup

    def _apply_limits(self, tree: CgroupTree, cgroup: CgroupDir, limits: Limits) -> None:
        files = limits.files()
        skipped = set(unenforced(files, tree.controllers))
        for name, value in files.items():
            if name in skipped:
                continue
            try:
                cgroup.write(name, value)
            except OSError as exc:
                if name not in self._warned_files:
                    self._warned_files.add(name)
                    log.warning("cannot set %s (%s): that limit is not enforced", name, exc)

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def kill_all_now(self) -> None:
        """The daemon is leaving without stopping its sessions: nothing of theirs survives."""
        for contained in list(self._sessions.values()):
            contained.kill_now()
        if self.tree is not None:
            self.tree.kill_all()

    def close(self) -> None:
        if self.tree is not None:
            self.tree.close()
