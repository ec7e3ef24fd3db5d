"""How the daemon starts an agent or a terminal command: ``Launcher``.

``PlainLauncher`` runs it as the daemon's own user in a new process session (the tree is
its process group). ``containment.SessionContainment`` runs it as the session's agent
user, inside the session's cgroup (the tree is a cgroup). Callers see one face.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import Process

from vm_agent.process.procgroup import PgidTree, ProcessTree


@dataclass(frozen=True, slots=True)
class Launched:
    process: Process
    tree: ProcessTree
    leaf: str = ""  # what to hand ``Launcher.forget`` once the tree is gone


class Launcher(Protocol):
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
        """Starts ``argv``; ``leaf`` names the kind of sub-tree it gets (``agent``, a terminal
        id); the launcher may make the name unique (an agent run's successor can start
        before the last one is forgotten).

        Raises ``OSError`` when it cannot start (a missing program). Without
        ``stdin_pipe`` its stdin is at end of file from the start.
        """
        ...

    def forget(self, leaf: str) -> None:
        """The leaf's processes are gone: its bookkeeping may go too."""
        ...


async def open_in_own_session(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin_pipe: bool,
    stderr: int,
    identity: Mapping[str, Any] | None = None,
) -> Process:
    """``argv`` leading a new process session (and group); ``identity``: user, group...
    for ``subprocess`` (applied between fork and exec in C, safe with threads)."""
    return await anyio.open_process(
        list(argv),
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        **(identity or {}),
    )


class PlainLauncher:
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
        process = await open_in_own_session(
            argv, cwd=cwd, env=env, stdin_pipe=stdin_pipe, stderr=stderr
        )
        return Launched(process, PgidTree(process.pid), leaf)

    def forget(self, leaf: str) -> None:
        pass
