"""One session's containment: its user, its cgroup (one leaf per agent run or terminal).

A ``Launcher``: the agent and each terminal start as the session's user, inside a leaf of
the session's cgroup. Stopping a leaf kills its whole tree, ``setsid`` or not; releasing
the session kills and removes its cgroup.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio

from vm_agent.containment.cgroupfs import CgroupDir
from vm_agent.containment.limits import Limits
from vm_agent.containment.plan import AGENT_UMASK, agent_env
from vm_agent.containment.spawn import SpawnAs, open_in_cgroup
from vm_agent.containment.users import AgentUser
from vm_agent.process.launch import Launched, open_in_own_session
from vm_agent.process.procgroup import PgidTree

log = logging.getLogger(__name__)

_EMPTY_WAIT_S = 5.0


class CgroupLeafTree:
    """The processes of one leaf cgroup, with OOM kills counted at the session's cgroup."""

    def __init__(self, leaf: CgroupDir, session: CgroupDir) -> None:
        self.leaf = leaf
        self.session = session

    def __str__(self) -> str:
        return f"cgroup {self.leaf.path}"

    def alive(self) -> bool:
        return self.leaf.populated()

    def members(self) -> list[int]:
        pids: list[int] = []
        for cg in self.leaf.walk():
            with contextlib.suppress(OSError):
                pids += cg.procs()
        return sorted(pids)

    def signal(self, sig: int) -> bool:
        try:
            return self.leaf.signal_all(sig) > 0
        except OSError:
            return False

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.leaf.kill()

    def oom_kills(self) -> int | None:
        try:
            return self.session.keyed("memory.events").get("oom_kill")
        except OSError:
            return None


async def wait_empty(cg: CgroupDir, within_s: float = _EMPTY_WAIT_S) -> bool:
    delay = 0.005
    with anyio.move_on_after(within_s):
        while cg.populated():
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)
        return True
    return False


class SessionContainment:
    def __init__(
        self,
        *,
        session_id: str,
        user: AgentUser | None,
        limits: Limits,
        workdir: Path,
        cgroup: CgroupDir | None = None,
        make_cgroup: Callable[[], CgroupDir] | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        """``cgroup`` the session's cgroup, or ``make_cgroup`` to make it at the first
        launch (a session restored after a restart may never run again); neither: no
        cgroups, process groups only."""
        self.session_id = session_id
        self._on_release = on_release
        self.user = user
        self.limits = limits
        self.workdir = workdir
        self.cgroup = cgroup
        self._make_cgroup = make_cgroup
        self.released = False
        self._leaves = itertools.count(1)

    @property
    def spawn_as(self) -> SpawnAs:
        if self.user is None:
            return SpawnAs()
        return SpawnAs(self.user.uid, self.user.gid, AGENT_UMASK)

    @property
    def file_credentials(self) -> tuple[int, int] | None:
        """(uid, gid) that ``fs/*`` acts as, or None to act as the daemon."""
        return None if self.user is None else (self.user.uid, self.user.gid)

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        return agent_env(env, self.user)

    async def launch(
        self,
        argv: Sequence[str],
        *,
        leaf: str,
        cwd: Path,
        env: Mapping[str, str],
        stdin_pipe: bool,
        stderr: int,
    ) -> Launched:
        if self.released:
            raise OSError("the session's containment is released")
        if self.cgroup is None and self._make_cgroup is not None:
            self.cgroup = self._make_cgroup()
        if self.cgroup is None:
            process = await open_in_own_session(
                argv,
                cwd=cwd,
                env=env,
                stdin_pipe=stdin_pipe,
                stderr=stderr,
                identity=self.spawn_as.popen_kwargs(),
            )
            return Launched(process, PgidTree(process.pid), leaf)
        # Unique per launch: a recovery's new agent may start while the old run still
        # cleans up (and removes) its own leaf.
        name = f"{leaf}-{next(self._leaves)}"
        cg = self.cgroup.child(name).make()
        try:
            process = await open_in_cgroup(
                argv,
                cgroup=cg,
                cwd=cwd,
                env=env,
                stdin_pipe=stdin_pipe,
                stderr=stderr,
                spawn_as=self.spawn_as,
            )
        except BaseException:
            self.forget(name)
            raise
        return Launched(process, CgroupLeafTree(cg, self.cgroup), name)

    def forget(self, leaf: str) -> None:
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.child(leaf).remove_tree()

    def kill_now(self) -> None:
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.kill()

    async def wait_idle(self, still_stopped: Callable[[], bool]) -> bool:
        """Waits until the session's cgroup holds no process (``populated 0``); what is
        left after the wait is killed, if the session is ``still_stopped`` (a recovery may
        have started a new agent meanwhile). True once empty; without a cgroup, True."""
        cg = self.cgroup
        if cg is None or not cg.exists():
            return True
        if await wait_empty(cg):
            return True
        if not still_stopped():
            return False
        log.warning("session %s: processes left after its stop; killing them", self.session_id)
        self.kill_now()
        return await wait_empty(cg)

    async def release(self) -> None:
        """Kills whatever is left in the session's cgroup and removes it."""
        self.released = True
        if self._on_release is not None:
            self._on_release()
        if self.cgroup is None or not self.cgroup.exists():
            return
        with anyio.CancelScope(shield=True):
            self.kill_now()
            if not await wait_empty(self.cgroup):
                log.error("session %s: cgroup %s still populated", self.session_id, self.cgroup)
            with contextlib.suppress(OSError):
                if not self.cgroup.remove_tree():
                    log.warning("session %s: cgroup %s not removed", self.session_id, self.cgroup)
