"""What runs on this node, for the heartbeat: the control plane never reaps a node that
reports any of it (docs/control-plane.md, node lifecycle).

- ``turns``: sessions prompting or cancelling (a turn in flight);
- ``permissions``: permission requests waiting for a person's answer;
- ``terminals``: people's terminals open;
- ``background``: processes alive in the sessions' cgroups other than the agent process
  itself: what an agent or a terminal left running (a dev server, a build), a terminal's
  shell, and an agent's own helper processes (erring on the side of keeping the node).

Read from the real state: the sessions' machines, their permission policies, the terminal
registry, and each session cgroup's ``cgroup.procs``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from vm_agent.acp.permissions import AskPolicy
from vm_agent.containment.cgroupfs import CgroupDir
from vm_agent.core.vocabulary import SessionState
from vm_agent.session.session import AgentSession

IN_A_TURN = (SessionState.PROMPTING, SessionState.CANCELLING)
# Not at rest and not idle: the supervisor's sessions the drain still waits for.
WORKING = (*IN_A_TURN, SessionState.STARTING, SessionState.RECOVERING)


@dataclass(frozen=True, slots=True)
class Activity:
    turns: int = 0
    permissions: int = 0
    terminals: int = 0
    background: int = 0

    @property
    def any(self) -> bool:
        return any((self.turns, self.permissions, self.terminals, self.background))

    def report(self) -> dict[str, int]:
        return asdict(self)


def background_processes(cgroup: CgroupDir, agent_pid: int | None) -> int:
    """Processes in ``cgroup`` and beneath it, the agent's own process left out. A cgroup
    removed meanwhile (the session ended) counts as empty."""
    found: set[int] = set()
    for cg in cgroup.walk():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, OSError):
            found.update(cg.procs())
    found.discard(agent_pid if agent_pid is not None else -1)
    return len(found)


def session_activity(sessions: Iterable[AgentSession], terminals: Callable[[str], int]) -> Activity:
    """Reads the files of the sessions' cgroups: call it in a worker thread."""
    turns = permissions = open_terminals = background = 0
    for s in list(sessions):
        if s.state in IN_A_TURN:
            turns += 1
        policy = s.permissions
        if isinstance(policy, AskPolicy):
            permissions += len(policy.pending())
        open_terminals += terminals(s.id)
        cg = s.containment.cgroup if s.containment is not None else None
        if cg is not None:
            background += background_processes(cg, s.agent_pid)
    return Activity(turns, permissions, open_terminals, background)


def drained(sessions: Iterable[AgentSession], activity: Activity) -> bool:
    """Nothing runs: no session starting, recovering or in a turn, no activity at all."""
    return not activity.any and not any(s.state in WORKING for s in sessions)
