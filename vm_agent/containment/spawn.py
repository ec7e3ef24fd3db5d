"""Starting a process inside a cgroup before it can fork, without ``preexec_fn``.

The daemon has threads, so nothing may run between fork and exec but what
``subprocess`` does in C (user, groups, umask, session). The child is started through a
gate instead: ``sh`` waits for one line on its stdin, and only then ``exec``s the real
command. The parent writes the child's pid into the cgroup first, then the line, so the
command's first instruction already runs in the cgroup. ``read`` takes its line a byte at
a time from a pipe, so nothing of what follows on stdin is lost to the gate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import Process

from vm_agent.containment.cgroupfs import CgroupDir

GATE = 'read -r _ || exit 125; exec "$@"'
GATE_NAME = "vm-agent-gate"
_SH = "/bin/sh"


@dataclass(frozen=True, slots=True)
class SpawnAs:
    """Whose process it is; ``uid`` None keeps the daemon's own user."""

    uid: int | None = None
    gid: int | None = None
    umask: int = -1  # -1: the daemon's own

    def popen_kwargs(self) -> dict[str, object]:
        if self.uid is None:
            return {"umask": self.umask}
        # No supplementary group of the daemon's survives: only the user's own group.
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": self.umask}


def resolve_program(argv0: str, env: Mapping[str, str]) -> str:
    """What ``exec`` will run; ``FileNotFoundError`` now rather than an exit 127 later."""
    if "/" in argv0:
        if not os.path.exists(argv0):
            raise FileNotFoundError(2, "No such file or directory", argv0)
        return argv0
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(2, "No such file or directory (on PATH)", argv0)
    return found


async def open_in_cgroup(
    argv: Sequence[str],
    *,
    cgroup: CgroupDir,
    cwd: Path,
    env: Mapping[str, str],
    stdin_pipe: bool,
    stderr: int,
    spawn_as: SpawnAs,
) -> Process:
    """Starts ``argv`` already inside ``cgroup``; its stdin stays ours if ``stdin_pipe``."""
    if not argv:
        raise FileNotFoundError(2, "empty command", "")
    resolve_program(argv[0], env)
    process = await anyio.open_process(
        [_SH, "-c", GATE, GATE_NAME, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        **spawn_as.popen_kwargs(),  # type: ignore[arg-type]
    )
    assert process.stdin is not None
    try:
        try:
            cgroup.add(process.pid)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot enter cgroup {cgroup.path}: {exc.strerror}") from exc
        await process.stdin.send(b"\n")
        if not stdin_pipe:
            await process.stdin.aclose()
    except BaseException:
        # Still waiting at the gate (or already gone): it never ran the command.
        with suppress(ProcessLookupError):
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()
        raise
    return process
