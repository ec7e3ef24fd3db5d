"""A task's repository wired into the daemon (issue 23): the credential socket, the helper's
command line, the mirrors for ``workspace/push``, and tokens through the control link."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vm_agent.common.redact import Redactor
from vm_agent.containment.cgroupfs import Cgroup2Mount, parse_cgroup2_mount
from vm_agent.containment.host import Containment
from vm_agent.control_link.client import ControlPlaneClient
from vm_agent.gitwork.broker import Candidate, CredentialBroker, TokenCache
from vm_agent.gitwork.push import GitWork, Pusher
from vm_agent.gitwork.run import GitSetup
from vm_agent.session.supervisor import Supervisor

HELPER_SCRIPT = "vm-agent-git-credential"


def helper_argv() -> tuple[str, ...]:
    """The installed helper beside this interpreter, else the same module through it."""
    script = Path(sys.executable).parent / HELPER_SCRIPT
    if script.exists():
        return (str(script),)
    return (sys.executable, "-m", "vm_agent.gitwork.helper")


def candidates_of(supervisor: Supervisor) -> Callable[[], list[Candidate]]:
    def listed() -> list[Candidate]:
        out = []
        for s in supervisor.sessions.values():
            if s.repository is None:
                continue
            contained = s.containment
            user = None if contained is None else contained.user
            cgroup = None if contained is None or contained.cgroup is None else contained.cgroup
            out.append(
                Candidate(
                    s.id,
                    None if user is None else user.uid,
                    None if cgroup is None else cgroup.path,
                    s.repository,
                )
            )
        return out

    return listed


def cgroup_resolver(cgroups_on: bool) -> Callable[[PurePosixPath], Path | None]:
    """A process's cgroup (as ``/proc/<pid>/cgroup`` names it) to its directory here; None
    for all when the daemon runs without cgroups (the uid alone then decides)."""
    mount: Cgroup2Mount | None = None
    if cgroups_on:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8") as f:
                mount = parse_cgroup2_mount(f.read())
        except OSError:
            mount = None

    def resolve(cgroup: PurePosixPath) -> Path | None:
        return None if mount is None else mount.dir_of(cgroup)

    return resolve


@dataclass
class GitWiring:
    setup: GitSetup
    pusher: Pusher
    broker: CredentialBroker


def wire_git(
    *,
    socket_path: Path,
    state_dir: Path,
    supervisor: Supervisor,
    client: ControlPlaneClient,
    redactor: Redactor,
    containment: Containment | None,
    helper: tuple[str, ...] | None = None,
) -> GitWiring:
    """Sets the supervisor's git (before any session starts) and returns the socket to serve."""
    setup = GitSetup(socket_path, helper or helper_argv(), state_dir / "git-mirrors")
    pusher = Pusher(setup, client.git_token, redactor)

    async def read_token(workspace_id: str) -> tuple[str, float]:
        return await client.git_token(workspace_id, "read")

    broker = CredentialBroker(
        socket_path,
        candidates=candidates_of(supervisor),
        tokens=TokenCache(read_token, redactor),
        cgroup_dir=cgroup_resolver(containment is not None and containment.tree is not None),
    )
    # Before any session exists: each session keeps the configuration it was made with.
    supervisor.config = dataclasses.replace(supervisor.config, git=GitWork(setup, pusher))
    return GitWiring(setup, pusher, broker)
